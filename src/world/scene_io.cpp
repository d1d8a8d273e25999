#include "world/scene_io.h"

#include <cstdio>

#include "io/errors.h"
#include "io/json_io.h"
#include "world/text.h"

namespace p2dpo::world {

using ojson = nlohmann::ordered_json;
using io::get_optional;
using io::get_required;

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string image_rel_path(const Scene& s) {
  return std::string("images/") + split_name(s.split) + "/" + s.id + ".png";
}

namespace {

const char* stripe_orientation_name(int o) { return o == 0 ? "vertical" : o == 1 ? "horizontal" : "diagonal"; }

ojson rgb_json(const Rgb& c) { return ojson::array({c[0], c[1], c[2]}); }

template <typename Enum, size_t N>
Enum enum_from_name(const std::string& name, const std::array<const char*, N>& names, const std::string& file,
                    const std::string& field) {
  for (size_t i = 0; i < N; ++i)
    if (name == names[i]) return static_cast<Enum>(i);
  throw InputError(file, "field '" + field + "': unknown value '" + name + "'");
}

Rgb rgb_from(const nlohmann::json& j, const std::string& key, const std::string& file, const std::string& context) {
  const auto v = get_required<std::vector<int>>(j, key, file, context);
  if (v.size() != 3) throw InputError(file, "field '" + context + "." + key + "': expected 3 channel values");
  Rgb out{};
  for (int c = 0; c < 3; ++c) {
    if (v[c] < 0 || v[c] > 255) throw InputError(file, "field '" + context + "." + key + "': channel out of 0..255");
    out[c] = static_cast<uint8_t>(v[c]);
  }
  return out;
}

}  // namespace

ojson scene_to_json(const Scene& s, const Vocabulary& vocab, uint64_t pixel_hash) {
  ojson j;
  j["id"] = s.id;
  j["split"] = split_name(s.split);
  j["image"] = image_rel_path(s);
  j["width"] = s.width;
  j["height"] = s.height;
  j["central_square"] = ojson::array({s.square_x0(), s.square_y0(), s.square_x0() + s.square_side(),
                                      s.square_y0() + s.square_side()});
  const Background& b = s.background;
  ojson bg;
  bg["gradient"] = gradient_name(b.gradient);
  bg["color0"] = rgb_json(b.color0);
  bg["color1"] = rgb_json(b.color1);
  bg["texture"] = texture_name(b.texture);
  if (b.texture != Texture::None) {
    bg["texture_amplitude"] = b.texture_amplitude;
    bg["texture_period"] = b.texture_period;
  }
  if (b.texture == Texture::Stripes) bg["stripe_orientation"] = stripe_orientation_name(b.stripe_orientation);
  if (b.texture == Texture::Noise) bg["texture_seed"] = b.texture_seed;
  j["background"] = bg;
  ojson objects = ojson::array();
  for (const auto& o : s.objects) {
    ojson oj;
    oj["name"] = full_name(vocab, o);
    oj["class"] = vocab.class_name(o.cls);
    oj["shape"] = vocab.shapes[o.shape];
    oj["color"] = vocab.colors[o.color];
    oj["size"] = size_name(o.size);
    oj["bbox"] = ojson::array({o.x0, o.y0, o.x1, o.y1});
    oj["position"] = kRegionNames[region_of(s, o)];
    oj["rgb"] = rgb_json(o.rgb);
    objects.push_back(oj);
  }
  j["objects"] = objects;
  ojson rels = ojson::array();
  for (const auto& r : s.relations)
    rels.push_back(ojson{{"subject", r.subject}, {"relation", relation_name(r.kind)}, {"object", r.object}});
  j["relations"] = rels;
  j["pixel_fnv1a64"] = hex64(pixel_hash);
  return j;
}

Scene scene_from_json(const nlohmann::json& j, const Vocabulary& vocab, const std::string& file) {
  Scene s;
  s.id = get_required<std::string>(j, "id", file, "");
  const std::string ctx = "scene " + s.id;
  const std::string split = get_required<std::string>(j, "split", file, ctx);
  s.split = enum_from_name<Split>(split, std::array<const char*, 3>{"train", "prompts", "eval"}, file, ctx + ".split");
  const auto dash = s.id.rfind('-');
  try {
    s.index = dash == std::string::npos ? 0 : std::stoll(s.id.substr(dash + 1));
  } catch (const std::exception&) {
    throw InputError(file, "field '" + ctx + ".id': expected <split>-<number>");
  }
  s.width = get_required<int>(j, "width", file, ctx);
  s.height = get_required<int>(j, "height", file, ctx);
  if (s.width <= 0 || s.height <= 0) throw InputError(file, ctx + ": width and height must be positive");

  const nlohmann::json bg = get_required<nlohmann::json>(j, "background", file, ctx);
  const std::string bctx = ctx + ".background";
  Background& b = s.background;
  b.gradient = enum_from_name<Gradient>(get_required<std::string>(bg, "gradient", file, bctx),
                                        std::array<const char*, 4>{"horizontal", "vertical", "diagonal", "antidiagonal"},
                                        file, bctx + ".gradient");
  b.color0 = rgb_from(bg, "color0", file, bctx);
  b.color1 = rgb_from(bg, "color1", file, bctx);
  b.texture = enum_from_name<Texture>(get_required<std::string>(bg, "texture", file, bctx),
                                      std::array<const char*, 4>{"none", "noise", "stripes", "checker"}, file,
                                      bctx + ".texture");
  b.texture_amplitude = get_optional<int>(bg, "texture_amplitude", 0, file, bctx);
  b.texture_period = get_optional<int>(bg, "texture_period", 0, file, bctx);
  if (b.texture != Texture::None && b.texture_period <= 0)
    throw InputError(file, "field '" + bctx + ".texture_period': must be positive");
  b.stripe_orientation =
      b.texture == Texture::Stripes
          ? enum_from_name<int>(get_required<std::string>(bg, "stripe_orientation", file, bctx),
                                std::array<const char*, 3>{"vertical", "horizontal", "diagonal"}, file,
                                bctx + ".stripe_orientation")
          : 0;
  b.texture_seed = get_optional<uint64_t>(bg, "texture_seed", 0, file, bctx);

  const nlohmann::json objects = get_required<nlohmann::json>(j, "objects", file, ctx);
  if (!objects.is_array()) throw InputError(file, "field '" + ctx + ".objects': expected array");
  for (size_t i = 0; i < objects.size(); ++i) {
    const std::string octx = ctx + ".objects[" + std::to_string(i) + "]";
    Object o;
    const std::string cls = get_required<std::string>(objects[i], "class", file, octx);
    o.cls = vocab.class_index(cls);
    if (o.cls < 0) throw InputError(file, "field '" + octx + ".class': '" + cls + "' is not in the world's vocabulary");
    o.shape = vocab.shape_of(o.cls);
    o.color = vocab.color_of(o.cls);
    o.size = enum_from_name<SizeClass>(get_required<std::string>(objects[i], "size", file, octx),
                                       std::array<const char*, 2>{"small", "large"}, file, octx + ".size");
    const auto box = get_required<std::vector<int>>(objects[i], "bbox", file, octx);
    if (box.size() != 4 || box[2] - box[0] != box[3] - box[1] || box[2] <= box[0] || box[0] < 0 || box[1] < 0 ||
        box[2] > s.width || box[3] > s.height)
      throw InputError(file, "field '" + octx + ".bbox': expected a square [x0, y0, x1, y1) inside the image");
    o.x0 = box[0];
    o.y0 = box[1];
    o.x1 = box[2];
    o.y1 = box[3];
    o.rgb = rgb_from(objects[i], "rgb", file, octx);
    s.objects.push_back(o);
  }
  const nlohmann::json rels = get_required<nlohmann::json>(j, "relations", file, ctx);
  if (!rels.is_array()) throw InputError(file, "field '" + ctx + ".relations': expected array");
  for (size_t i = 0; i < rels.size(); ++i) {
    const std::string rctx = ctx + ".relations[" + std::to_string(i) + "]";
    Relation r;
    r.subject = get_required<int>(rels[i], "subject", file, rctx);
    r.object = get_required<int>(rels[i], "object", file, rctx);
    const int n = static_cast<int>(s.objects.size());
    if (r.subject < 0 || r.subject >= n || r.object < 0 || r.object >= n)
      throw InputError(file, "field '" + rctx + "': object index out of range");
    r.kind = enum_from_name<RelationKind>(get_required<std::string>(rels[i], "relation", file, rctx),
                                          std::array<const char*, 2>{"left of", "above"}, file, rctx + ".relation");
    s.relations.push_back(r);
  }
  return s;
}

Vocabulary vocabulary_from_world_json(const std::string& path) {
  const nlohmann::json w = io::read_json_file(path);
  const nlohmann::json voc = get_required<nlohmann::json>(w, "vocabulary", path, "");
  const auto shapes = get_required<std::vector<std::string>>(voc, "shapes", path, "vocabulary");
  std::vector<std::string> colors;
  const nlohmann::json color_list = get_required<nlohmann::json>(voc, "colors", path, "vocabulary");
  if (!color_list.is_array()) throw InputError(path, "field 'vocabulary.colors': expected array");
  for (const auto& c : color_list) colors.push_back(get_required<std::string>(c, "name", path, "vocabulary.colors[]"));
  const nlohmann::json priors = get_required<nlohmann::json>(w, "priors", path, "");
  const int decay = get_required<int>(priors, "popularity_decay_permille", path, "priors");
  try {
    return build_vocabulary(shapes, colors, decay);
  } catch (const InputError& e) {
    throw InputError(path, std::string("vocabulary: ") + e.what());
  }
}

std::vector<Scene> read_scenes(const std::string& world_dir, const Vocabulary& vocab) {
  const std::string path = world_dir + "/scenes.jsonl";
  std::vector<Scene> out;
  for (const auto& line : io::read_jsonl_file(path)) out.push_back(scene_from_json(line, vocab, path));
  return out;
}

}  // namespace p2dpo::world
