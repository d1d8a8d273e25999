// `world make` end to end through the library: determinism, the file layout contract, ground truth
// against the rendered pixels, the text and evaluation files against the scenes, bad options.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "image/decode.h"
#include "io/atomic_file.h"
#include "io/json_io.h"
#include "test_paths.h"
#include "test_util.h"
#include "world/make_world.h"
#include "world/random.h"
#include "world/render.h"
#include "world/scene_io.h"
#include "world/vocabulary.h"
#include "world_test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace p2dpo::world;
using p2dpo::test::error_of;
using p2dpo::test::scratch_dir;

namespace {

WorldOptions small_world(const std::string& out, uint64_t seed = 7) {
  WorldOptions o;
  o.out_dir = out;
  o.seed = seed;
  o.train_count = 30;
  o.prompt_count = 10;
  o.eval_count = 30;
  return o;
}

// Relative path -> file bytes, for every regular file under dir.
std::map<std::string, std::string> read_tree(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = p2dpo::io::read_file(e.path().string());
  return files;
}

std::map<std::string, json> scenes_by_id(const std::string& dir) {
  std::map<std::string, json> out;
  for (const auto& s : p2dpo::io::read_jsonl_file(dir + "/scenes.jsonl")) out[s["id"].get<std::string>()] = s;
  return out;
}

std::set<std::string> classes_of(const json& scene) {
  std::set<std::string> out;
  for (const auto& o : scene["objects"]) out.insert(o["class"].get<std::string>());
  return out;
}

const json* object_of_class(const json& scene, const std::string& cls) {
  for (const auto& o : scene["objects"])
    if (o["class"] == cls) return &o;
  return nullptr;
}

// The "<size> <color> <shape>" / "<color> <shape>" mentions in a text, as class names.
std::multiset<std::string> mentions(const std::string& text, const Vocabulary& v) {
  std::multiset<std::string> out;
  for (int c = 0; c < v.num_classes(); ++c) {
    const std::string name = v.class_name(c);
    for (size_t pos = text.find(name); pos != std::string::npos; pos = text.find(name, pos + 1)) out.insert(name);
  }
  return out;
}

// One world shared by the read-only checks below (generating it takes a moment).
class WorldFiles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(scratch_dir("world-files") + "/world");
    make_world(small_world(*dir_));
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static const std::string& dir() { return *dir_; }
  static Vocabulary vocab() {
    WorldOptions o;
    return build_vocabulary(o.shapes, o.colors, o.popularity_decay_permille);
  }
  static std::string* dir_;
};
std::string* WorldFiles::dir_ = nullptr;

}  // namespace

TEST(WorldMake, SameSeedGivesIdenticalFilesAndAnotherSeedDoesNot) {
  const std::string root = scratch_dir("world-determinism");
  make_world(small_world(root + "/a"));
  WorldOptions threaded = small_world(root + "/b");
  threaded.threads = 3;  // the files must not depend on the thread count
  make_world(threaded);
  make_world(small_world(root + "/c", 8));
  const auto a = read_tree(root + "/a"), b = read_tree(root + "/b"), c = read_tree(root + "/c");
  ASSERT_EQ(a.size(), 30u + 10u + 30u + 12u);  // images + 12 text files
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [path, bytes] : a) {
    ASSERT_TRUE(b.count(path)) << path;
    EXPECT_EQ(fnv1a64(bytes), fnv1a64(b.at(path))) << path << " differs between two runs with the same seed";
  }
  // Another seed: other scenes, other pixels, other text.
  EXPECT_NE(a.at("scenes.jsonl"), c.at("scenes.jsonl"));
  EXPECT_NE(a.at("train/conversations.json"), c.at("train/conversations.json"));
  int same_images = 0;
  for (const auto& [path, bytes] : a)
    if (path.rfind("images/", 0) == 0 && c.count(path) && c.at(path) == bytes) ++same_images;
  EXPECT_EQ(same_images, 0);
  // No staging directory is left behind.
  for (const auto& e : fs::directory_iterator(root)) EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos);
}

// Pins the exact output of a tiny world (pixels included, through their hashes in scenes.jsonl), so
// a platform or compiler that draws differently fails here. Update together with kGeneratorVersion.
TEST(WorldMake, GoldenFingerprintOfATinyWorld) {
  WorldOptions o;
  o.out_dir = scratch_dir("world-golden") + "/w";
  o.seed = 0;
  o.train_count = 3;
  o.prompt_count = 2;
  o.eval_count = 2;
  make_world(o);
  const auto files = read_tree(o.out_dir);
  std::string fingerprint;
  for (const char* f : {"scenes.jsonl", "train/conversations.json", "prompts/pairs.jsonl", "eval/pope/world_pope_adversarial.json"}) {
    char hex[20];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(files.at(f))));
    fingerprint += std::string(f) + "=" + hex + "\n";
  }
  EXPECT_EQ(fingerprint,
            "scenes.jsonl=29fec2b64e6786b3\n"
            "train/conversations.json=0234e8e5d1030792\n"
            "prompts/pairs.jsonl=a8c30752358e7a2d\n"
            "eval/pope/world_pope_adversarial.json=a97f761a6d2e6f1e\n") << "generator output changed: bump kGeneratorVersion if intended";
}

TEST_F(WorldFiles, WorldJsonDocumentsTheWorld) {
  const json w = p2dpo::io::read_json_file(dir() + "/world.json");
  EXPECT_EQ(w["generator_version"], kGeneratorVersion);
  EXPECT_EQ(w["seed"], 7);
  EXPECT_EQ(w["command"], "p2dpo world make --out DIR --seed 7 --train 30 --prompts 10 --eval 30");
  EXPECT_EQ(w["counts"]["train"], 30);
  EXPECT_EQ(w["counts"]["eval"], 30);
  EXPECT_EQ(w["model_input"]["input_side"], 96);
  EXPECT_EQ(w["text"]["human_turn"], "{question}\n<image>");
  EXPECT_EQ(w["vocabulary"]["shapes"].size(), 4u);
  EXPECT_EQ(w["vocabulary"]["colors"].size(), 8u);
  EXPECT_EQ(w["vocabulary"]["classes"].size(), 32u);
  for (const auto& c : w["vocabulary"]["classes"]) EXPECT_TRUE(c["partner"].is_string());
  EXPECT_EQ(w["statistics"]["train"]["scenes"], 30);
}

TEST_F(WorldFiles, PixelsMatchTheGroundTruth) {
  const Vocabulary v = vocab();
  const auto scenes = p2dpo::io::read_jsonl_file(dir() + "/scenes.jsonl");
  ASSERT_EQ(scenes.size(), 70u);
  int full_small = 0, small = 0;
  for (const auto& s : scenes) {
    const auto img = p2dpo::image::decode_image_file(dir() + "/" + s["image"].get<std::string>());
    ASSERT_EQ(img.width, s["width"].get<int>());
    ASSERT_EQ(img.height, s["height"].get<int>());
    char hex[20];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(pixel_hash(img)));
    EXPECT_EQ(s["pixel_fnv1a64"], hex);
    const int S = std::min(img.width, img.height);
    const auto crop = p2dpo::world::test::hf_crop_box(img.width, img.height, 96);
    for (const auto& o : s["objects"]) {
      const auto box = o["bbox"].get<std::array<int, 4>>();
      const Rgb rgb = o["rgb"].get<Rgb>();
      const int side = box[2] - box[0];
      ASSERT_GE(box[0], crop[0]);
      ASSERT_GE(box[1], crop[1]);
      ASSERT_LE(box[2], crop[2]);
      ASSERT_LE(box[3], crop[3]);
      if (o["size"] == "small") {
        EXPECT_LT(side * 96.0 / S, 16.0);
      }
      // The centre pixel: exactly the object's colour where the shape covers it fully (every large
      // object), else a blend whose nearest palette colour is still the object's.
      const int cx = (box[0] + box[2]) / 2, cy = (box[1] + box[3]) / 2;
      const uint8_t* p = img.at(cx, cy);
      const int cls = v.class_index(o["class"].get<std::string>());
      const auto cov = shape_coverage(v.shape_kinds[v.shape_of(cls)], side)[(cy - box[1]) * side + (cx - box[0])];
      if (o["size"] == "large") {
        ASSERT_EQ(cov, 16) << s["id"];
      }
      if (o["size"] == "small") {
        ++small;
        full_small += cov == 16;
      }
      if (cov == 16) {
        EXPECT_EQ((Rgb{p[0], p[1], p[2]}), rgb) << s["id"] << " " << o["name"];
      } else {
        // Nearest palette colour (the object's own, not another class's).
        int best = -1, best_d = 1 << 30;
        for (size_t c = 0; c < v.color_rgb.size(); ++c) {
          int d = 0;
          for (int k = 0; k < 3; ++k) d += (p[k] - v.color_rgb[c][k]) * (p[k] - v.color_rgb[c][k]);
          if (d < best_d) best_d = d, best = static_cast<int>(c);
        }
        EXPECT_EQ(v.colors[best], o["color"]) << s["id"] << " " << o["name"];
      }
    }
  }
  EXPECT_GT(full_small * 10, small * 9);
}

// scenes.jsonl is complete: redrawing each line gives the very pixels of its PNG.
TEST_F(WorldFiles, SceneLinesRedrawTheirImagesExactly) {
  const Vocabulary v = vocabulary_from_world_json(dir() + "/world.json");
  EXPECT_EQ(v.partner, vocab().partner);
  const auto scenes = read_scenes(dir(), v);
  const auto lines = p2dpo::io::read_jsonl_file(dir() + "/scenes.jsonl");
  ASSERT_EQ(scenes.size(), lines.size());
  WorldOptions defaults;
  for (size_t i = 0; i < scenes.size(); ++i) {
    const Scene& s = scenes[i];
    const auto png = p2dpo::image::decode_image_file(dir() + "/" + image_rel_path(s));
    const auto redrawn = render_scene(s, v);
    EXPECT_EQ(redrawn.rgb, png.rgb) << s.id;
    EXPECT_EQ(hex64(pixel_hash(redrawn)), lines[i]["pixel_fnv1a64"]) << s.id;
    EXPECT_EQ(json::parse(scene_to_json(s, v, pixel_hash(redrawn)).dump()), lines[i]) << s.id;
    // The stored relations are exactly the rule's.
    const auto rule = compute_relations(s.objects, relation_margin_px(defaults, s.square_side()));
    ASSERT_EQ(rule.size(), s.relations.size()) << s.id;
    for (size_t r = 0; r < rule.size(); ++r) {
      EXPECT_EQ(rule[r].subject, s.relations[r].subject);
      EXPECT_EQ(rule[r].object, s.relations[r].object);
      EXPECT_EQ(rule[r].kind, s.relations[r].kind);
    }
  }
  json bad = lines[0];
  bad["objects"][0]["class"] = "mauve circle";
  EXPECT_NE(error_of([&] { scene_from_json(bad, v, "scenes.jsonl"); }).find("'mauve circle' is not in the world's vocabulary"),
            std::string::npos);
  bad = lines[0];
  bad["objects"][0]["bbox"] = {0, 0, 5, 6};
  EXPECT_NE(error_of([&] { scene_from_json(bad, v, "scenes.jsonl"); }).find(".bbox"), std::string::npos);
}

TEST_F(WorldFiles, TrainingTextAgreesWithTheScenes) {
  const Vocabulary v = vocab();
  const auto scenes = scenes_by_id(dir());
  const json conv = p2dpo::io::read_json_file(dir() + "/train/conversations.json");
  ASSERT_TRUE(conv.is_array());
  ASSERT_EQ(conv.size(), 30u * 4u);
  const std::regex existence(R"(^(?:Is there|Do you see) an? (\w+ \w+) in (?:the|this) image\?$)");
  std::map<std::string, int> types;
  for (const auto& c : conv) {
    const std::string id = c["id"], image = c["image"];
    const json& scene = scenes.at(id.substr(0, id.rfind('-')));  // "train-000012-3" -> scene "train-000012"
    ASSERT_EQ(scene["image"], image);
    ASSERT_TRUE(fs::exists(dir() + "/" + image));
    ASSERT_EQ(c["conversations"].size(), 2u);
    const std::string human = c["conversations"][0]["value"], answer = c["conversations"][1]["value"];
    ASSERT_EQ(c["conversations"][0]["from"], "human");
    ASSERT_EQ(c["conversations"][1]["from"], "gpt");
    // Question first, then the image, exactly once.
    ASSERT_GE(human.size(), 8u);
    ASSERT_EQ(human.substr(human.size() - 8), "\n<image>") << human;
    ASSERT_EQ(human.find("<image>"), human.size() - 7);
    const std::string question = human.substr(0, human.size() - 8);
    const std::string type = c["type"];
    ++types[type];
    const auto present = classes_of(scene);
    if (type == "description") {
      const auto said = mentions(answer, v);
      EXPECT_EQ(std::set<std::string>(said.begin(), said.end()), present) << answer;
      EXPECT_EQ(said.size(), present.size()) << answer;
    }
    std::smatch m;
    if (type == "existence") {
      ASSERT_TRUE(std::regex_match(question, m, existence)) << question;
      const bool yes = present.count(m[1].str()) == 1;
      EXPECT_EQ(answer.rfind(yes ? "Yes" : "No", 0), 0u) << question << " -> " << answer;
      if (yes) {
        EXPECT_NE(answer.find((*object_of_class(scene, m[1].str()))["position"].get<std::string>()), std::string::npos)
            << answer;
      } else {
        EXPECT_NE(answer.find("but no " + m[1].str() + "."), std::string::npos) << answer;
      }
    }
    if (type == "existence_short") {
      const std::string suffix = "\nAnswer the question using a single word or phrase.";
      ASSERT_EQ(question.size() > suffix.size() ? question.substr(question.size() - suffix.size()) : "", suffix);
      const std::string asked = question.substr(0, question.size() - suffix.size());
      ASSERT_TRUE(std::regex_match(asked, m, existence)) << question;
      EXPECT_EQ(answer, present.count(m[1].str()) ? "Yes" : "No") << question;
    }
    if (type == "size") {
      const std::regex size_q(R"(^Is the (\w+ \w+) small or large\?$)");
      ASSERT_TRUE(std::regex_match(question, m, size_q)) << question;
      EXPECT_EQ(answer, "The " + m[1].str() + " is " + (*object_of_class(scene, m[1].str()))["size"].get<std::string>() + ".");
    }
    if (type == "where") {
      const std::regex where_q(R"(^Where is the (\w+ \w+)\?$)");
      ASSERT_TRUE(std::regex_match(question, m, where_q)) << question;
      const json* o = object_of_class(scene, m[1].str());
      if (o) {
        EXPECT_EQ(answer.rfind("The " + m[1].str() + " is ", 0), 0u) << answer;
        EXPECT_NE(answer.find((*o)["position"].get<std::string>() + "."), std::string::npos) << answer;
      } else {
        EXPECT_EQ(answer, "There is no " + m[1].str() + " in the image.");
      }
    }
  }
  EXPECT_EQ(types["description"], 30);
  EXPECT_GT(types["existence"], 20);

  const auto captions = p2dpo::io::read_jsonl_file(dir() + "/train/captions.jsonl");
  ASSERT_EQ(captions.size(), 30u);
  for (const auto& c : captions) {
    const auto said = mentions(c["caption"], v);
    EXPECT_EQ(std::set<std::string>(said.begin(), said.end()), classes_of(scenes.at(c["id"].get<std::string>())));
  }
  const std::string corpus = p2dpo::io::read_file(dir() + "/text/corpus.txt");
  EXPECT_EQ(corpus.find("<image>"), std::string::npos);
  EXPECT_NE(corpus.find("Is there a "), std::string::npos);
  // One line per question (the short-answer suffix is a line of its own), answer and caption.
  EXPECT_GE(std::count(corpus.begin(), corpus.end(), '\n'), 30 * 4 * 2 + 30);
  EXPECT_EQ(corpus.find("\n\n"), std::string::npos);
  EXPECT_EQ(corpus.back(), '\n');
}

TEST_F(WorldFiles, PromptsCarryNoAnswersAndTheirTruthIsSeparate) {
  const auto pairs = p2dpo::io::read_jsonl_file(dir() + "/prompts/pairs.jsonl");
  const auto truth = p2dpo::io::read_jsonl_file(dir() + "/prompts/pairs_truth.jsonl");
  ASSERT_EQ(pairs.size(), 10u);
  ASSERT_EQ(truth.size(), 10u);
  const auto scenes = scenes_by_id(dir());
  for (size_t i = 0; i < pairs.size(); ++i) {
    EXPECT_EQ(pairs[i].size(), 3u) << pairs[i].dump();  // id, image, question: nothing else
    EXPECT_EQ(pairs[i]["id"], truth[i]["id"]);
    EXPECT_EQ(pairs[i]["question"], truth[i]["question"]);
    EXPECT_TRUE(fs::exists(dir() + "/" + pairs[i]["image"].get<std::string>()));
    const std::string q = pairs[i]["question"];
    EXPECT_NE(q.rfind("Is ", 0), 0u) << q;
    EXPECT_EQ(pairs[i]["image"].get<std::string>().rfind("images/prompts/", 0), 0u);
    EXPECT_FALSE(truth[i]["answer"].get<std::string>().empty());
    EXPECT_TRUE(scenes.count(truth[i]["scene"].get<std::string>()));
  }
}

TEST_F(WorldFiles, PopeSplitsAreBalancedAndFollowTheirRules) {
  const Vocabulary v = vocab();
  const auto scenes = scenes_by_id(dir());
  std::map<std::string, std::vector<json>> splits;
  for (const char* name : {"random", "popular", "adversarial"})
    splits[name] = p2dpo::io::read_jsonl_file(dir() + "/eval/pope/world_pope_" + name + ".json");
  const std::regex pope_q(R"(^Is there an? (\w+ \w+) in the image\?$)");
  for (const auto& [name, lines] : splits) {
    ASSERT_EQ(lines.size(), splits["random"].size());
    int yes = 0;
    std::set<std::string> images;
    for (size_t i = 0; i < lines.size(); ++i) {
      const json& q = lines[i];
      ASSERT_EQ(q["question_id"], static_cast<int64_t>(i) + 1);
      const std::string image = q["image"];
      images.insert(image);
      ASSERT_TRUE(fs::exists(dir() + "/images/eval/" + image));
      const json& scene = scenes.at(q["scene"].get<std::string>());
      std::smatch m;
      const std::string text = q["text"];
      ASSERT_TRUE(std::regex_match(text, m, pope_q)) << text;
      ASSERT_EQ(m[1].str(), q["object"].get<std::string>());
      const bool present = classes_of(scene).count(m[1].str()) == 1;
      ASSERT_EQ(q["label"], present ? "yes" : "no") << text;
      if (present) {
        ++yes;
        const json* o = object_of_class(scene, m[1].str());
        EXPECT_EQ(q["size"], (*o)["size"]);
        EXPECT_EQ(q["bbox"], (*o)["bbox"]);
        EXPECT_EQ(q["objects"].size(), 1u);
      }
      if (!present && name == "adversarial" && q["negative_source"] == "partner") {
        bool partner_of_present = false;
        for (const auto& o : scene["objects"])
          partner_of_present |= v.partner[v.class_index(o["class"].get<std::string>())] == v.class_index(m[1].str());
        EXPECT_TRUE(partner_of_present) << text;
      }
      if (!present && name == "popular") {
        // No absent class is more popular than the one asked about unless it was asked too.
        const int rank = v.popularity_rank[v.class_index(m[1].str())];
        int more_popular_absent = 0;
        for (int r = 0; r < rank; ++r)
          more_popular_absent += classes_of(scene).count(v.class_name(v.by_popularity[r])) == 0;
        EXPECT_LT(more_popular_absent, 3) << text;
      }
    }
    EXPECT_EQ(2 * yes, static_cast<int>(lines.size())) << name << " is not balanced";
    EXPECT_EQ(images.size(), 30u);
  }
  // Same positives in every split; the negatives differ between splits somewhere.
  int differing_negatives = 0;
  for (size_t i = 0; i < splits["random"].size(); ++i) {
    if (splits["random"][i]["label"] == "yes") {
      EXPECT_EQ(splits["random"][i]["text"], splits["adversarial"][i]["text"]);
      EXPECT_EQ(splits["random"][i]["text"], splits["popular"][i]["text"]);
    } else {
      differing_negatives += splits["random"][i]["text"] != splits["popular"][i]["text"];
      differing_negatives += splits["adversarial"][i]["text"] != splits["popular"][i]["text"];
    }
  }
  EXPECT_GT(differing_negatives, 10);
}

TEST_F(WorldFiles, DescriptionAndAfrSetsMatchTheScenes) {
  const auto scenes = scenes_by_id(dir());
  const auto desc = p2dpo::io::read_jsonl_file(dir() + "/eval/descriptions.jsonl");
  ASSERT_EQ(desc.size(), 30u);
  size_t objects = 0;
  for (size_t i = 0; i < desc.size(); ++i) {
    EXPECT_EQ(desc[i]["question_id"], static_cast<int64_t>(i) + 1);
    EXPECT_EQ(desc[i]["text"], "Describe the image.");
    const json& scene = scenes.at(desc[i]["scene"].get<std::string>());
    const auto names = desc[i]["objects"].get<std::vector<std::string>>();
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), classes_of(scene));
    objects += names.size();
    EXPECT_TRUE(fs::exists(dir() + "/images/eval/" + desc[i]["image"].get<std::string>()));
  }
  const auto afr = p2dpo::io::read_jsonl_file(dir() + "/eval/afr.jsonl");
  ASSERT_EQ(afr.size(), objects);
  for (const auto& a : afr) {
    const std::string answer_object = a["answer_object"];
    const json* o = object_of_class(scenes.at(a["scene"].get<std::string>()), answer_object);
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(a["bbox"], (*o)["bbox"]);
    EXPECT_EQ(a["label"], "yes");
    EXPECT_EQ(a["text"], "Is there " + std::string(article_for(answer_object)) + " " + answer_object + " in the image?");
  }
}

TEST(WorldMake, RejectsBadOptionsNamingTheFlag) {
  const std::string root = scratch_dir("world-bad-options");
  auto message = [&](auto&& change) {
    WorldOptions o = small_world(root + "/w");
    change(o);
    return error_of([&] { make_world(o); });
  };
  EXPECT_NE(message([](WorldOptions& o) { o.train_count = -1; }).find("--train: must be between 0 and 999999, got -1"),
            std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.eval_count = 1000000; }).find("--eval"), std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.train_count = o.prompt_count = o.eval_count = 0; }).find("nothing to generate"),
            std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.shapes = {"circle", "blob"}; }).find("--shapes: unknown name 'blob'"),
            std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.max_objects = 20; }).find("--max-objects"), std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.min_image_side = 300; }).find("--max-side"), std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.out_dir = ""; }).find("--out"), std::string::npos);
  EXPECT_NE(message([](WorldOptions& o) { o.threads = 0; }).find("--threads"), std::string::npos);
  // Unwritable / unusable output locations.
  p2dpo::io::write_file_atomic(root + "/a-file", "x");
  EXPECT_NE(message([&](WorldOptions& o) { o.out_dir = root + "/a-file"; }).find("is not a directory"), std::string::npos);
  EXPECT_NE(message([&](WorldOptions& o) { o.out_dir = root + "/a-file/sub"; }).find("--out: cannot create"),
            std::string::npos);
  fs::create_directories(root + "/busy");
  p2dpo::io::write_file_atomic(root + "/busy/notes.txt", "mine");
  EXPECT_NE(message([&](WorldOptions& o) { o.out_dir = root + "/busy"; }).find("not empty"), std::string::npos);
  EXPECT_NE(message([&](WorldOptions& o) {
              o.out_dir = root + "/busy";
              o.overwrite = true;
            }).find("it is not a world"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(root + "/busy/notes.txt"));
  EXPECT_FALSE(fs::exists(root + "/w"));
}

TEST(WorldMake, OverwriteReplacesAPreviousWorldWhole) {
  const std::string root = scratch_dir("world-overwrite");
  WorldOptions o = small_world(root + "/w");
  o.train_count = 5;
  o.prompt_count = 1;
  o.eval_count = 1;
  make_world(o);
  ASSERT_TRUE(fs::exists(root + "/w/images/train/train-000004.png"));
  o.train_count = 3;
  EXPECT_NE(error_of([&] { make_world(o); }).find("--overwrite"), std::string::npos);
  o.overwrite = true;
  make_world(o);
  EXPECT_FALSE(fs::exists(root + "/w/images/train/train-000004.png"));  // nothing stale survives
  EXPECT_TRUE(fs::exists(root + "/w/images/train/train-000002.png"));
  EXPECT_EQ(p2dpo::io::read_json_file(root + "/w/world.json")["counts"]["train"], 3);
  // An existing empty directory is fine without --overwrite; a trailing slash too.
  fs::create_directories(root + "/empty");
  o.overwrite = false;
  o.out_dir = root + "/empty/";
  make_world(o);
  EXPECT_TRUE(fs::exists(root + "/empty/world.json"));
  for (const auto& e : fs::directory_iterator(root))
    EXPECT_TRUE(e.path().filename() == "w" || e.path().filename() == "empty") << e.path();
}

TEST(WorldMake, ZeroTrainImagesStillWritesEveryFile) {
  WorldOptions o = small_world(scratch_dir("world-no-train") + "/w");
  o.train_count = 0;
  o.prompt_count = 0;
  o.eval_count = 4;
  const auto summary = make_world(o);
  EXPECT_EQ(summary.images, 4);
  EXPECT_EQ(p2dpo::io::read_json_file(o.out_dir + "/train/conversations.json"), json::array());
  EXPECT_EQ(p2dpo::io::read_file(o.out_dir + "/text/corpus.txt"), "");
  EXPECT_FALSE(p2dpo::io::read_jsonl_file(o.out_dir + "/eval/pope/world_pope_random.json").empty());
}
