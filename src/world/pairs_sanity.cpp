#include "world/pairs_sanity.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::world {

using nlohmann::json;

namespace {
std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
bool word_boundary_before(const std::string& s, size_t p) { return p == 0 || !std::isalpha(static_cast<unsigned char>(s[p - 1])); }
}  // namespace

NamedClasses named_classes(const std::string& text, const std::vector<std::string>& class_names,
                           const std::vector<std::string>& present) {
  const std::string t = lower(text);
  const std::set<std::string> here(present.begin(), present.end());
  NamedClasses n;
  for (const auto& cls : class_names) {
    bool found = false;
    for (size_t p = t.find(cls); p != std::string::npos && !found; p = t.find(cls, p + 1)) {
      const size_t end = p + cls.size();
      const bool plural = end < t.size() && t[end] == 's';
      const size_t after = plural ? end + 1 : end;
      found = word_boundary_before(t, p) && (after >= t.size() || !std::isalpha(static_cast<unsigned char>(t[after])));
    }
    if (found) (here.count(cls) ? n.present : n.absent) += 1;
  }
  return n;
}

int faithfulness_order(const NamedClasses& c, const NamedClasses& r) {
  if (c.absent != r.absent) return c.absent < r.absent ? 1 : -1;
  if (c.present != r.present) return c.present > r.present ? 1 : -1;
  return 0;
}

double random_box_hit_rate(int box_w, int box_h, int image_w, int image_h,
                           const std::vector<std::pair<double, double>>& points) {
  box_w = std::min(box_w, image_w);
  box_h = std::min(box_h, image_h);
  int64_t hits = 0, total = 0;
  for (int y = 0; y <= image_h - box_h; ++y) {
    for (int x = 0; x <= image_w - box_w; ++x) {
      ++total;
      for (const auto& [px, py] : points) {
        if (px >= x && px < x + box_w && py >= y && py < y + box_h) {
          ++hits;
          break;
        }
      }
    }
  }
  return total > 0 ? static_cast<double>(hits) / static_cast<double>(total) : 0.0;
}

json pairs_sanity(const std::string& pairs_dir, const std::string& world_dir, bool kept_only) {
  const std::string world_path = world_dir + "/world.json";
  const json w = io::read_json_file(world_path);
  std::vector<std::string> classes;
  const auto& vocab = w.at("vocabulary");
  for (const auto& c : vocab.at("colors"))
    for (const auto& s : vocab.at("shapes")) classes.push_back(c.at("name").get<std::string>() + " " + s.get<std::string>());

  std::map<std::string, std::vector<std::string>> present_in;  // scene id -> classes
  const std::string scenes_path = world_dir + "/scenes.jsonl";
  for (const auto& s : io::read_jsonl_file(scenes_path)) {
    auto& v = present_in[io::get_required<std::string>(s, "id", scenes_path, "scene")];
    for (const auto& o : s.at("objects")) v.push_back(o.at("class").get<std::string>());
  }
  std::map<std::string, json> truth;  // prompt id -> truth record
  const std::string truth_path = world_dir + "/prompts/pairs_truth.jsonl";
  for (auto& t : io::read_jsonl_file(truth_path)) truth[io::get_required<std::string>(t, "id", truth_path, "truth")] = t;

  struct Tally {
    int64_t right = 0, wrong = 0, tie = 0;
    json to_json(int64_t n, const std::string& first = "chosen", const std::string& second = "rejected") const {
      auto share = [n](int64_t k) { return n > 0 ? static_cast<double>(k) / static_cast<double>(n) : 0.0; };
      return {{first + "_more_faithful", share(right)}, {second + "_more_faithful", share(wrong)}, {"neither", share(tie)},
              {"counts", {{first, right}, {second, wrong}, {"neither", tie}}}};
    }
    void add(int o) { (o > 0 ? right : o < 0 ? wrong : tie) += 1; }
  } focus, robust;
  // Each winner against the model's own answer on the plain view (focus.original, when the run
  // recorded it): a winner no more faithful than that answer gives DPO nothing to move toward.
  Tally focus_vs_original, robust_vs_original;
  int64_t n_original = 0;
  double crop_hits = 0, random_hits = 0;
  int64_t n = 0, n_boxes = 0;
  std::map<std::string, int64_t> by_type;
  const std::string pairs_path = pairs_dir + "/pairs.jsonl";
  for (const auto& r : io::read_jsonl_file(pairs_path)) {
    if (kept_only && !r.at("filter").at("keep").get<bool>()) continue;
    const std::string id = io::get_required<std::string>(r, "id", pairs_path, "record");
    auto t = truth.find(id);
    if (t == truth.end()) throw InputError(truth_path, "has no ground truth for pair record '" + id + "'");
    const auto& present = present_in.at(t->second.at("scene").get<std::string>());
    ++n;
    ++by_type[t->second.value("type", "")];
    focus.add(faithfulness_order(named_classes(r["focus"]["chosen"], classes, present),
                                 named_classes(r["focus"]["rejected"], classes, present)));
    robust.add(faithfulness_order(named_classes(r["robust"]["chosen"], classes, present),
                                  named_classes(r["robust"]["rejected"], classes, present)));
    if (r["focus"].contains("original")) {
      const NamedClasses original = named_classes(r["focus"]["original"], classes, present);
      ++n_original;
      focus_vs_original.add(faithfulness_order(named_classes(r["focus"]["chosen"], classes, present), original));
      robust_vs_original.add(faithfulness_order(named_classes(r["robust"]["chosen"], classes, present), original));
    }
    // The objects the question is about (all of them for a description).
    std::vector<std::pair<double, double>> centres;
    for (const auto& o : t->second.at("objects")) {
      const auto b = o.at("bbox").get<std::vector<double>>();
      centres.emplace_back((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    }
    if (centres.empty()) continue;
    const auto box = r.at("bbox").get<std::vector<int>>();
    const int W = r.at("width"), H = r.at("height");
    bool hit = false;
    for (const auto& [x, y] : centres) hit = hit || (x >= box[0] && x < box[2] && y >= box[1] && y < box[3]);
    crop_hits += hit;
    random_hits += random_box_hit_rate(box[2] - box[0], box[3] - box[1], W, H, centres);
    ++n_boxes;
  }
  json out;
  out["pairs"] = n;
  out["kept_only"] = kept_only;
  out["question_types"] = by_type;
  out["focus"] = focus.to_json(n);
  out["robust"] = robust.to_json(n);
  if (n_original > 0)
    out["winners_vs_original"] = {{"pairs", n_original},
                                  {"focus", focus_vs_original.to_json(n_original, "winner", "original")},
                                  {"robust", robust_vs_original.to_json(n_original, "winner", "original")}};
  out["crop_contains_asked_object"] = {
      {"boxes", n_boxes},
      {"attention_crop", n_boxes > 0 ? crop_hits / static_cast<double>(n_boxes) : 0.0},
      {"random_box_same_size", n_boxes > 0 ? random_hits / static_cast<double>(n_boxes) : 0.0}};
  return out;
}

}  // namespace p2dpo::world
