#include "world/truth_pairs.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::world {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t hash_text(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: the same choice on every machine
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

struct ClassInfo {
  std::string shape, color, partner;
};

// Whole-word occurrences of `word` in `text` (word characters: letters).
std::vector<size_t> find_words(const std::string& text, const std::string& word) {
  std::vector<size_t> at;
  auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  for (size_t p = text.find(word); p != std::string::npos; p = text.find(word, p + 1)) {
    const bool left = p == 0 || !is_letter(text[p - 1]);
    const bool right = p + word.size() >= text.size() || !is_letter(text[p + word.size()]);
    if (left && right) at.push_back(p);
  }
  return at;
}

}  // namespace

TruthPairsResult write_truth_pairs(const TruthPairsOptions& o) {
  if (o.world_dir.empty()) throw InputError("--world", "required");
  if (o.out_path.empty()) throw InputError("--out", "required");
  const std::string world_file = (fs::path(o.world_dir) / "world.json").string();
  const json world = io::read_json_file(world_file);
  const auto vocab = io::get_required<json>(world, "vocabulary", world_file, "");
  std::map<std::string, ClassInfo> classes;
  std::vector<std::string> class_order, colors;
  for (const auto& c : io::get_required<json>(vocab, "classes", world_file, "vocabulary")) {
    const auto name = io::get_required<std::string>(c, "name", world_file, "vocabulary.classes");
    classes[name] = {io::get_required<std::string>(c, "shape", world_file, "vocabulary.classes"),
                     io::get_required<std::string>(c, "color", world_file, "vocabulary.classes"),
                     c.value("partner", std::string())};
    class_order.push_back(name);
  }
  for (const auto& c : io::get_required<json>(vocab, "colors", world_file, "vocabulary")) {
    colors.push_back(io::get_required<std::string>(c, "name", world_file, "vocabulary.colors"));
  }
  if (classes.empty() || colors.size() < 2) throw InputError(world_file, "field 'vocabulary': too few classes or colours");

  // Every class present in each scene (the answer's objects are only those it mentions).
  const std::string scenes_file = (fs::path(o.world_dir) / "scenes.jsonl").string();
  std::map<std::string, std::set<std::string>> present;
  const auto scenes = io::read_jsonl_file(scenes_file);
  for (size_t i = 0; i < scenes.size(); ++i) {
    const std::string ctx = "line " + std::to_string(i + 1);
    auto& set = present[io::get_required<std::string>(scenes[i], "id", scenes_file, ctx)];
    for (const auto& obj : io::get_required<json>(scenes[i], "objects", scenes_file, ctx)) {
      set.insert(io::get_required<std::string>(obj, "class", scenes_file, ctx + ".objects"));
    }
  }

  const std::string truth_file = (fs::path(o.world_dir) / "prompts" / "pairs_truth.jsonl").string();
  const auto rows = io::read_jsonl_file(truth_file);
  TruthPairsResult result;
  std::string out;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (o.limit > 0 && result.pairs >= o.limit) break;
    ++result.prompts;
    const std::string ctx = "line " + std::to_string(i + 1);
    const auto id = io::get_required<std::string>(rows[i], "id", truth_file, ctx);
    const auto scene = io::get_required<std::string>(rows[i], "scene", truth_file, ctx);
    const auto answer = io::get_required<std::string>(rows[i], "answer", truth_file, ctx);
    const auto it = present.find(scene);
    if (it == present.end()) throw InputError(truth_file, "field '" + ctx + ".scene': '" + scene + "' is not in scenes.jsonl");
    const std::set<std::string>& in_scene = it->second;
    const uint64_t h = mix(o.seed ^ hash_text(id));

    // Mentions of present classes ("red circle" inside "the small red circle").
    struct Mention {
      size_t at;
      std::string cls;
    };
    std::vector<Mention> mentions;
    for (const auto& cls : class_order) {
      if (!in_scene.count(cls)) continue;
      for (size_t at : find_words(answer, cls)) mentions.push_back({at, cls});
    }
    std::sort(mentions.begin(), mentions.end(), [](const Mention& a, const Mention& b) { return a.at < b.at; });
    std::string rejected, injected;
    if (!mentions.empty()) {
      const Mention& m = mentions[h % mentions.size()];
      const ClassInfo& info = classes.at(m.cls);
      std::string replacement;
      if (!info.partner.empty() && !in_scene.count(info.partner)) replacement = info.partner;
      for (int pass = 0; pass < 2 && replacement.empty(); ++pass) {
        std::vector<std::string> options;
        for (const auto& cls : class_order) {
          if (in_scene.count(cls) || cls == m.cls) continue;
          if (pass == 0 && classes.at(cls).color != info.color) continue;
          options.push_back(cls);
        }
        if (!options.empty()) replacement = options[(h >> 32) % options.size()];
      }
      if (!replacement.empty()) {
        rejected = answer;
        rejected.replace(m.at, m.cls.size(), replacement);
        injected = replacement;
      }
    } else {
      // No object named: corrupt the first colour word (colour questions).
      for (const auto& color : colors) {
        const auto at = find_words(answer, color);
        if (at.empty()) continue;
        std::vector<std::string> others;
        for (const auto& c : colors) {
          if (c != color) others.push_back(c);
        }
        rejected = answer;
        rejected.replace(at.front(), color.size(), others[(h >> 32) % others.size()]);
        injected = others[(h >> 32) % others.size()];
        break;
      }
    }
    if (rejected.empty() || rejected == answer) continue;
    json rec = {{"id", id},
                {"image", io::get_required<std::string>(rows[i], "image", truth_file, ctx)},
                {"question", io::get_required<std::string>(rows[i], "question", truth_file, ctx)},
                {"chosen", answer},
                {"rejected", rejected},
                {"injected", injected}};
    out += rec.dump() + "\n";
    ++result.pairs;
  }
  io::write_file_atomic(o.out_path, out);
  return result;
}

}  // namespace p2dpo::world
