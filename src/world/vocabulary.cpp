#include "world/vocabulary.h"

#include <algorithm>
#include <set>

#include "io/errors.h"

namespace p2dpo::world {

const std::vector<ShapeInfo>& known_shapes() {
  static const std::vector<ShapeInfo> shapes = {
      {"circle", ShapeKind::Circle},   {"square", ShapeKind::Square}, {"triangle", ShapeKind::Triangle},
      {"star", ShapeKind::Star},       {"diamond", ShapeKind::Diamond}, {"cross", ShapeKind::Cross},
      {"hexagon", ShapeKind::Hexagon},
  };
  return shapes;
}

// Saturated and far apart in RGB; backgrounds are low-saturation mid-greys, so none is confused with them.
const std::vector<ColorInfo>& known_colors() {
  static const std::vector<ColorInfo> colors = {
      {"red", {215, 40, 40}},    {"green", {40, 160, 60}},   {"blue", {45, 85, 215}},  {"yellow", {235, 200, 35}},
      {"purple", {140, 65, 185}}, {"orange", {240, 135, 30}}, {"cyan", {40, 190, 200}}, {"pink", {235, 120, 180}},
      {"white", {245, 245, 245}}, {"black", {30, 30, 30}},
  };
  return colors;
}

int Vocabulary::shape_index(const std::string& name) const {
  auto it = std::find(shapes.begin(), shapes.end(), name);
  return it == shapes.end() ? -1 : static_cast<int>(it - shapes.begin());
}
int Vocabulary::color_index(const std::string& name) const {
  auto it = std::find(colors.begin(), colors.end(), name);
  return it == colors.end() ? -1 : static_cast<int>(it - colors.begin());
}
int Vocabulary::class_index(const std::string& class_name) const {
  auto space = class_name.find(' ');
  if (space == std::string::npos) return -1;
  int c = color_index(class_name.substr(0, space)), s = shape_index(class_name.substr(space + 1));
  return (c < 0 || s < 0) ? -1 : class_of(s, c);
}

namespace {

template <typename Info>
std::string known_names(const std::vector<Info>& infos) {
  std::string out;
  for (const auto& i : infos) out += (out.empty() ? "" : ", ") + std::string(i.name);
  return out;
}

template <typename Info>
std::vector<const Info*> resolve(const std::vector<std::string>& names, const std::vector<Info>& catalog,
                                 const std::string& flag) {
  if (names.size() < 2) throw InputError(flag, "needs at least 2 names, got " + std::to_string(names.size()));
  std::set<std::string> seen;
  std::vector<const Info*> out;
  for (const auto& n : names) {
    if (!seen.insert(n).second) throw InputError(flag, "'" + n + "' is listed twice");
    auto it = std::find_if(catalog.begin(), catalog.end(), [&](const Info& i) { return n == i.name; });
    if (it == catalog.end()) throw InputError(flag, "unknown name '" + n + "' (known: " + known_names(catalog) + ")");
    out.push_back(&*it);
  }
  return out;
}

}  // namespace

Vocabulary build_vocabulary(const std::vector<std::string>& shapes, const std::vector<std::string>& colors,
                            int popularity_decay_permille) {
  if (popularity_decay_permille < 1 || popularity_decay_permille > 1000)
    throw InputError("popularity_decay_permille", "must be 1..1000, got " + std::to_string(popularity_decay_permille));
  Vocabulary v;
  for (const auto* s : resolve(shapes, known_shapes(), "--shapes")) {
    v.shapes.push_back(s->name);
    v.shape_kinds.push_back(s->kind);
  }
  for (const auto* c : resolve(colors, known_colors(), "--colors")) {
    v.colors.push_back(c->name);
    v.color_rgb.push_back(c->rgb);
  }
  const int S = static_cast<int>(v.shapes.size()), C = static_cast<int>(v.colors.size()), N = S * C;

  // Latin-square walk: rank r -> (r mod S, (r + r div S) mod C) visits every class once because
  // within one block of S ranks the colours are S consecutive values shifted by the block index.
  v.popularity_rank.assign(N, -1);
  std::vector<int> order;
  for (int r = 0; order.size() < static_cast<size_t>(N); ++r) {
    // When S > C some (shape, colour) pairs repeat within a block; skip repeats and keep walking.
    const int shape = r % S, color = (r + r / S) % C;
    const int cls = v.class_of(shape, color);
    if (v.popularity_rank[cls] >= 0) {
      if (r > 4 * N) break;  // safety net; the fill below completes the order
      continue;
    }
    v.popularity_rank[cls] = static_cast<int>(order.size());
    order.push_back(cls);
  }
  for (int cls = 0; cls < N; ++cls)
    if (v.popularity_rank[cls] < 0) {
      v.popularity_rank[cls] = static_cast<int>(order.size());
      order.push_back(cls);
    }
  v.by_popularity = order;

  v.base_weight.assign(N, 0);
  uint64_t w = 1000000;
  for (int r = 0; r < N; ++r) {
    v.base_weight[order[r]] = std::max<uint64_t>(w, 1);
    w = w * static_cast<uint64_t>(popularity_decay_permille) / 1000;
  }

  // Partners look alike (same colour, another shape), as a knife goes with a fork: a model that
  // is unsure of the shape falls back on the co-occurrence prior. Measured on partners that differed
  // in colour too: the base model reads colours almost perfectly, so such partners were no harder
  // than random negatives (adversarial F1 72.8 vs random 73.3). A class that finds no unpaired
  // same-colour class (large catalogs) pairs with the next one differing in both.
  v.partner.assign(N, -1);
  for (const bool same_color : {true, false}) {
    for (int i = 0; i < N; ++i) {
      const int a = order[i];
      if (v.partner[a] >= 0) continue;
      for (int j = i + 1; j < N; ++j) {
        const int b = order[j];
        if (v.partner[b] >= 0 || b == a || v.shape_of(a) == v.shape_of(b)) continue;
        if ((v.color_of(a) == v.color_of(b)) != same_color) continue;
        v.partner[a] = b;
        v.partner[b] = a;
        break;
      }
    }
  }
  return v;
}

const char* article_for(const std::string& next_word) {
  if (next_word.empty()) return "a";
  switch (next_word[0]) {
    case 'a': case 'e': case 'i': case 'o': case 'u': return "an";
    default: return "a";
  }
}

}  // namespace p2dpo::world
