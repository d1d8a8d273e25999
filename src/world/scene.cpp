#include "world/scene.h"

#include <algorithm>
#include <cstdio>

namespace p2dpo::world {

const char* split_name(Split s) {
  switch (s) {
    case Split::Train: return "train";
    case Split::Prompts: return "prompts";
    case Split::Eval: return "eval";
  }
  return "?";
}
const char* size_name(SizeClass s) { return s == SizeClass::Small ? "small" : "large"; }
const char* relation_name(RelationKind r) { return r == RelationKind::LeftOf ? "left of" : "above"; }
const char* gradient_name(Gradient g) {
  switch (g) {
    case Gradient::Horizontal: return "horizontal";
    case Gradient::Vertical: return "vertical";
    case Gradient::Diagonal: return "diagonal";
    case Gradient::AntiDiagonal: return "antidiagonal";
  }
  return "?";
}
const char* texture_name(Texture t) {
  switch (t) {
    case Texture::None: return "none";
    case Texture::Noise: return "noise";
    case Texture::Stripes: return "stripes";
    case Texture::Checker: return "checker";
  }
  return "?";
}

const std::array<const char*, 9> kRegionNames = {"top left", "top",    "top right",   "left",        "center",
                                                 "right",    "bottom left", "bottom", "bottom right"};
const std::array<const char*, 9> kRegionPhrases = {
    "at the top left",    "at the top",    "at the top right",    "on the left", "in the center",
    "on the right",       "at the bottom left", "at the bottom", "at the bottom right"};

int Scene::find_class(int cls) const {
  for (size_t i = 0; i < objects.size(); ++i)
    if (objects[i].cls == cls) return static_cast<int>(i);
  return -1;
}

namespace {
// Column (or row) 0..2 of a doubled centre coordinate within a square starting at `origin`.
int grid_cell(int center2, int origin, int side) {
  const int cell = 3 * (center2 - 2 * origin) / (2 * side);
  return std::clamp(cell, 0, 2);
}
}  // namespace

int region_of(const Scene& scene, const Object& obj) {
  const int S = scene.square_side();
  return grid_cell(obj.cy2(), scene.square_y0(), S) * 3 + grid_cell(obj.cx2(), scene.square_x0(), S);
}

std::array<int, 4> region_box(const Scene& scene, int region) {
  const int S = scene.square_side(), row = region / 3, col = region % 3;
  return {scene.square_x0() + col * S / 3, scene.square_y0() + row * S / 3, scene.square_x0() + (col + 1) * S / 3,
          scene.square_y0() + (row + 1) * S / 3};
}

std::vector<Relation> compute_relations(const std::vector<Object>& objects, int margin_px) {
  std::vector<Relation> out;
  for (size_t a = 0; a < objects.size(); ++a)
    for (size_t b = 0; b < objects.size(); ++b) {
      if (a == b) continue;
      if (objects[b].cx2() - objects[a].cx2() > 2 * margin_px)
        out.push_back({static_cast<int>(a), static_cast<int>(b), RelationKind::LeftOf});
      if (objects[b].cy2() - objects[a].cy2() > 2 * margin_px)
        out.push_back({static_cast<int>(a), static_cast<int>(b), RelationKind::Above});
    }
  return out;
}

int relation_margin_px(const WorldOptions& opt, int square_side) {
  return (square_side * opt.relation_margin_permille + 999) / 1000;
}

std::string scene_id(Split split, int64_t index) {
  char digits[32];
  std::snprintf(digits, sizeof digits, "%06lld", static_cast<long long>(index));
  return std::string(split_name(split)) + "-" + digits;
}

namespace {

int ceil_permille(int side, int permille) { return (side * permille + 999) / 1000; }
int floor_permille(int side, int permille) { return side * permille / 1000; }

Background sample_background(Rng& rng) {
  Background bg;
  // Low-saturation mid-tones: the saturated object palette (and white/black) stays far away.
  const int grey = static_cast<int>(rng.uniform(100, 170));
  const int delta = static_cast<int>(rng.uniform(-35, 35));
  for (int c = 0; c < 3; ++c) {
    bg.color0[c] = static_cast<uint8_t>(std::clamp<int64_t>(grey + rng.uniform(-10, 10), 0, 255));
    bg.color1[c] = static_cast<uint8_t>(std::clamp<int64_t>(grey + delta + rng.uniform(-10, 10), 0, 255));
  }
  bg.gradient = static_cast<Gradient>(rng.uniform(0, 3));
  bg.texture = static_cast<Texture>(rng.uniform(0, 3));
  bg.texture_amplitude = bg.texture == Texture::None ? 0 : static_cast<int>(rng.uniform(2, 6));
  switch (bg.texture) {
    case Texture::None: bg.texture_period = 0; break;
    case Texture::Noise: bg.texture_period = static_cast<int>(rng.uniform(16, 40)); break;
    case Texture::Stripes: bg.texture_period = static_cast<int>(rng.uniform(10, 32)); break;
    case Texture::Checker: bg.texture_period = static_cast<int>(rng.uniform(12, 40)); break;
  }
  bg.stripe_orientation = bg.texture == Texture::Stripes ? static_cast<int>(rng.uniform(0, 2)) : 0;
  bg.texture_seed = bg.texture == Texture::Noise ? rng.next() : 0;
  return bg;
}

// Classes of one scene: fresh draws by popularity among absent classes; after each object, its
// partner (if absent and a slot is left) joins with probability partner_percent.
std::vector<int> sample_classes(const Vocabulary& vocab, Rng& rng, int count, int partner_percent) {
  std::vector<int> classes;
  std::vector<uint64_t> weights = vocab.base_weight;
  while (static_cast<int>(classes.size()) < count) {
    int next = -1;
    if (!classes.empty()) {
      const int partner = vocab.partner[classes.back()];
      if (partner >= 0 && weights[partner] != 0 && rng.chance(partner_percent, 100)) next = partner;
    }
    if (next < 0) next = static_cast<int>(rng.weighted(weights));
    classes.push_back(next);
    weights[next] = 0;  // at most one object per class
  }
  return classes;
}

struct Layout {
  int ox, oy, S;
  int edge, gap, region_margin;
};

bool far_from_grid_lines(int center2, int origin, int side, int margin) {
  const int six_c = 3 * (center2 - 2 * origin);  // 6 x centre offset; grid lines at 6 x kS/3 = 2kS
  return std::abs(six_c - 2 * side) >= 6 * margin && std::abs(six_c - 4 * side) >= 6 * margin;
}

bool boxes_clash(const Object& a, const Object& b, int gap) {
  return !(a.x1 + gap <= b.x0 || b.x1 + gap <= a.x0 || a.y1 + gap <= b.y0 || b.y1 + gap <= a.y0);
}

// Places the objects (sides already set) largest first; false if some object found no free spot.
bool place_objects(std::vector<Object>& objs, const Layout& L, Rng& rng) {
  std::vector<size_t> order(objs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return objs[a].side() > objs[b].side(); });
  std::vector<const Object*> placed;
  for (size_t k : order) {
    Object& o = objs[k];
    const int side = o.side();
    const int lo_x = L.ox + L.edge, hi_x = L.ox + L.S - L.edge - side;
    const int lo_y = L.oy + L.edge, hi_y = L.oy + L.S - L.edge - side;
    bool ok = false;
    for (int attempt = 0; attempt < 80 && !ok; ++attempt) {
      o.x0 = static_cast<int>(rng.uniform(lo_x, hi_x));
      o.y0 = static_cast<int>(rng.uniform(lo_y, hi_y));
      o.x1 = o.x0 + side;
      o.y1 = o.y0 + side;
      if (!far_from_grid_lines(o.cx2(), L.ox, L.S, L.region_margin) ||
          !far_from_grid_lines(o.cy2(), L.oy, L.S, L.region_margin))
        continue;
      ok = std::none_of(placed.begin(), placed.end(), [&](const Object* p) { return boxes_clash(o, *p, L.gap); });
    }
    if (!ok) return false;
    placed.push_back(&o);
  }
  return true;
}

}  // namespace

Scene sample_scene(const WorldOptions& opt, const Vocabulary& vocab, Split split, int64_t index) {
  Rng rng(derive_seed(opt.seed, 0x5343454e45ULL /* "SCENE" */, static_cast<uint64_t>(split), static_cast<uint64_t>(index)));
  Scene scene;
  scene.split = split;
  scene.index = index;
  scene.id = scene_id(split, index);
  if (rng.chance(opt.square_percent, 100)) {
    scene.width = scene.height = static_cast<int>(rng.uniform(opt.min_image_side, opt.max_image_side));
  } else {
    scene.width = static_cast<int>(rng.uniform(opt.min_image_side, opt.max_image_side));
    scene.height = static_cast<int>(rng.uniform(opt.min_image_side, opt.max_image_side));
  }
  scene.background = sample_background(rng);

  const int S = scene.square_side();
  const Layout layout{scene.square_x0(), scene.square_y0(), S, ceil_permille(S, opt.edge_margin_permille),
                      std::max(2, ceil_permille(S, opt.object_gap_permille)),
                      ceil_permille(S, opt.region_margin_permille)};
  const int count = static_cast<int>(rng.uniform(opt.min_objects, std::min(opt.max_objects, vocab.num_classes())));
  const int partner_percent = split == Split::Eval ? opt.eval_partner_percent : opt.partner_percent;
  std::vector<int> classes = sample_classes(vocab, rng, count, partner_percent);

  std::vector<Object> objs;
  for (int cls : classes) {
    Object o;
    o.cls = cls;
    o.shape = vocab.shape_of(cls);
    o.color = vocab.color_of(cls);
    o.size = rng.chance(opt.small_percent, 100) ? SizeClass::Small : SizeClass::Large;
    const int side = o.size == SizeClass::Small
                         ? static_cast<int>(rng.uniform(ceil_permille(S, opt.small_min_permille), floor_permille(S, opt.small_max_permille)))
                         : static_cast<int>(rng.uniform(ceil_permille(S, opt.large_min_permille), floor_permille(S, opt.large_max_permille)));
    o.x1 = side;  // placed below
    o.y1 = side;
    for (int c = 0; c < 3; ++c)
      o.rgb[c] = static_cast<uint8_t>(
          std::clamp<int64_t>(vocab.color_rgb[o.color][c] + rng.uniform(-opt.color_jitter, opt.color_jitter), 0, 255));
    objs.push_back(o);
  }
  // Crowded draws (several large objects) may not fit: retry the layout, and drop the last-drawn
  // object only when it keeps failing.
  for (;;) {
    bool placed = false;
    for (int attempt = 0; attempt < 20 && !placed; ++attempt) placed = place_objects(objs, layout, rng);
    if (placed || objs.size() <= 1) break;
    objs.pop_back();
  }
  std::stable_sort(objs.begin(), objs.end(), [&](const Object& a, const Object& b) {
    const int ra = region_of(scene, a) / 3, rb = region_of(scene, b) / 3;
    if (ra != rb) return ra < rb;
    if (a.cx2() != b.cx2()) return a.cx2() < b.cx2();
    return a.cy2() < b.cy2();
  });
  scene.objects = std::move(objs);
  scene.relations = compute_relations(scene.objects, relation_margin_px(opt, S));
  return scene;
}

}  // namespace p2dpo::world
