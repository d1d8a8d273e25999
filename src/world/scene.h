#pragma once
// A scene's exact ground truth (objects, boxes, relations, background) and how scenes are drawn.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "world/options.h"
#include "world/random.h"
#include "world/vocabulary.h"

namespace p2dpo::world {

enum class Split { Train, Prompts, Eval };
const char* split_name(Split s);  // "train", "prompts", "eval"

enum class SizeClass { Small, Large };
const char* size_name(SizeClass s);  // "small", "large"

struct Object {
  int cls = 0, shape = 0, color = 0;
  SizeClass size = SizeClass::Small;
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // box in image pixels, x1/y1 exclusive; the shape touches all four sides
  Rgb rgb{};                           // the exact fill colour (palette colour + jitter)
  int side() const { return x1 - x0; }
  // Centre times two, so that it stays an integer.
  int cx2() const { return x0 + x1; }
  int cy2() const { return y0 + y1; }
};

enum class RelationKind { LeftOf, Above };
const char* relation_name(RelationKind r);  // "left of", "above"

struct Relation {
  int subject = 0, object = 0;  // indices into Scene::objects
  RelationKind kind = RelationKind::LeftOf;
};

enum class Gradient { Horizontal, Vertical, Diagonal, AntiDiagonal };
enum class Texture { None, Noise, Stripes, Checker };
const char* gradient_name(Gradient g);
const char* texture_name(Texture t);

// The background, fully determined by these numbers (the renderer draws exactly this).
struct Background {
  Rgb color0{}, color1{};  // gradient end colours
  Gradient gradient = Gradient::Horizontal;
  Texture texture = Texture::None;
  int texture_amplitude = 0;  // grey levels added to / removed from every channel, at most
  int texture_period = 16;    // noise lattice cell, stripe period or checker cell, in pixels
  int stripe_orientation = 0; // stripes: 0 vertical bands, 1 horizontal bands, 2 diagonal
  uint64_t texture_seed = 0;  // noise lattice values
};

struct Scene {
  std::string id;  // "train-000123"
  Split split = Split::Train;
  int64_t index = 0;
  int width = 0, height = 0;
  Background background;
  std::vector<Object> objects;  // reading order: by centre row, then column
  std::vector<Relation> relations;

  // The central square (side = short side) that holds every object.
  int square_side() const { return width < height ? width : height; }
  int square_x0() const { return (width - square_side()) / 2; }
  int square_y0() const { return (height - square_side()) / 2; }
  // Index of the object of class `cls`, or -1 (a class occurs at most once per scene).
  int find_class(int cls) const;
};

// Position words on a 3x3 grid over the central square, by box centre; index = row * 3 + column.
int region_of(const Scene& scene, const Object& obj);
extern const std::array<const char*, 9> kRegionNames;    // "top left", "top", ..., "bottom right"
extern const std::array<const char*, 9> kRegionPhrases;  // "at the top left", "on the left", "in the center", ...
// The grid cell's box [x0, y0, x1, y1) in image pixels.
std::array<int, 4> region_box(const Scene& scene, int region);

// Every ordered pair (a, b) with a "left of" b (a's box centre more than `margin_px` left of b's) or
// a "above" b; right of / below are the same facts read the other way.
std::vector<Relation> compute_relations(const std::vector<Object>& objects, int margin_px);
int relation_margin_px(const WorldOptions& opt, int square_side);

// Draws the scene `index` of `split` from its own random stream (derive_seed(seed, split, index)),
// so a scene does not depend on the sizes of the splits. Requires validated options.
Scene sample_scene(const WorldOptions& opt, const Vocabulary& vocab, Split split, int64_t index);

// "train-000123" (at least 6 digits).
std::string scene_id(Split split, int64_t index);

}  // namespace p2dpo::world
