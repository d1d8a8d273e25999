#pragma once
// The world's vocabulary: shapes x colours = object classes ("red circle"), their popularity
// (frequency imbalance, the POPE "popular" negatives) and co-occurrence partners (the "adversarial"
// negatives). Both priors depend only on the vocabulary, never on the seed, so every world made with
// the same vocabulary has the same language priors.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace p2dpo::world {

using Rgb = std::array<uint8_t, 3>;

enum class ShapeKind { Circle, Square, Triangle, Star, Diamond, Cross, Hexagon };

struct ShapeInfo {
  const char* name;
  ShapeKind kind;
};
struct ColorInfo {
  const char* name;
  Rgb rgb;
};

// Every shape and colour the renderer knows, in catalog order.
const std::vector<ShapeInfo>& known_shapes();
const std::vector<ColorInfo>& known_colors();

struct Vocabulary {
  std::vector<std::string> shapes, colors;
  std::vector<ShapeKind> shape_kinds;
  std::vector<Rgb> color_rgb;

  // Per class (index = shape * colors.size() + color):
  std::vector<int> popularity_rank;   // 0 = most popular
  std::vector<uint64_t> base_weight;  // drawing weight of a fresh object (decay^rank, integer)
  std::vector<int> partner;           // partner class, or -1 if it has none (symmetric)
  std::vector<int> by_popularity;     // class ids, most popular first

  int num_classes() const { return static_cast<int>(shapes.size() * colors.size()); }
  int class_of(int shape, int color) const { return shape * static_cast<int>(colors.size()) + color; }
  int shape_of(int cls) const { return cls / static_cast<int>(colors.size()); }
  int color_of(int cls) const { return cls % static_cast<int>(colors.size()); }
  std::string class_name(int cls) const { return colors[color_of(cls)] + " " + shapes[shape_of(cls)]; }
  // -1 if unknown.
  int shape_index(const std::string& name) const;
  int color_index(const std::string& name) const;
  int class_index(const std::string& class_name) const;
};

// Builds the vocabulary and its priors. Popularity: class at rank r has shape r mod S and colour
// (r + r div S) mod C (a Latin-square walk, so the most popular classes span all shapes and colours)
// and weight 1e6 * (decay/1000)^r. Partners: walking the ranks, each unpaired class pairs with the
// next unpaired one of the same colour and another shape (look-alikes, so the co-occurrence prior
// bites where the shape is unclear); a second walk pairs what is left with classes differing in both. Throws InputError("--shapes"/"--colors", ...) for unknown or repeated names or fewer than 2.
Vocabulary build_vocabulary(const std::vector<std::string>& shapes, const std::vector<std::string>& colors,
                            int popularity_decay_permille);

// "a" or "an" for the word that follows.
const char* article_for(const std::string& next_word);

}  // namespace p2dpo::world
