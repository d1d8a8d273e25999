#pragma once
// Everything that defines a generated world. All proportions are integers (per mille / per cent)
// so that no floating-point rounding can make two machines disagree about a scene.
#include <cstdint>
#include <string>
#include <vector>

namespace p2dpo::world {

// Bumped whenever the same options and seed would produce different bytes.
inline constexpr const char* kGeneratorVersion = "p2dpo-world-4";

struct WorldOptions {
  std::string out_dir;
  uint64_t seed = 0;

  // Images per split. train: base-model / CLIP training text; prompts: unlabelled pair-generation
  // prompts; eval: held-out POPE / CHAIR / AFR sets.
  int64_t train_count = 6000;
  int64_t prompt_count = 500;
  int64_t eval_count = 500;

  // Vocabulary, in order (names from known_shapes() / known_colors()). Grow it by listing more.
  std::vector<std::string> shapes = {"circle", "square", "triangle", "star"};
  // Eight colours: the base model reads colour almost perfectly and shape poorly, and with four
  // colours 62 % of the random POPE split's negatives shared their colour with an object in the
  // scene (a look-alike); eight colours halve that share (models/world/README.md).
  std::vector<std::string> colors = {"red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"};

  // Geometry. The model sees the image resized to `model_input_side` on its short side and centre
  // cropped; every object lies inside the central square (side = short side), `edge_margin_permille`
  // of that side away from its border, so the crop never cuts one.
  // Patch 12 (an 8x8 grid, 64 image tokens) and large objects of 30-40 % of the side, so a large
  // object spans 3-4 patches a side (at 22-32 % the world CLIP told large shapes apart 79 % of the
  // time, at 30-40 % 88 %). Measured on patch 16 with large objects of 15-25 % (1-1.5
  // patches): the base model told shapes apart so poorly that a single large object of the asked
  // colour and another shape drew "yes" 64 % of the time, on training scenes as on held-out ones.
  int model_input_side = 96;
  int patch_size = 12;
  int min_image_side = 192, max_image_side = 288;
  int square_percent = 30;  // share of square images; the rest draw width and height independently
  int edge_margin_permille = 40;
  // Object sides as per mille of the central square's side.
  int small_min_permille = 30, small_max_permille = 60;
  int large_min_permille = 300, large_max_permille = 400;
  int small_percent = 45;       // share of objects drawn small
  int object_gap_permille = 20;  // minimum gap between two objects' boxes
  // Object centres stay this far from the lines of the 3x3 position grid ("top left", ...), so
  // every position word is unambiguous.
  int region_margin_permille = 20;
  // "A left of B" when A's box centre is left of B's by more than this (per mille of the square side).
  int relation_margin_permille = 60;
  int min_objects = 1, max_objects = 6;
  int color_jitter = 8;  // each object's RGB = palette colour + uniform [-jitter, jitter] per channel

  // Language priors. Classes (colour + shape) are ranked by popularity; class r's base weight is
  // decay^r. After an object is drawn, its partner class is added with `partner_percent` (train and
  // prompt scenes) or `eval_partner_percent` (eval scenes, 0 = no prior, so absent partners, the
  // adversarial negatives, exist in most eval scenes).
  int popularity_decay_permille = 900;
  int partner_percent = 92;
  int eval_partner_percent = 0;

  // Text. Training: one description conversation plus `questions_per_image` question conversations per
  // train image. Prompts: `prompts_per_image` open-ended questions per prompt image. POPE: up to
  // `pope_per_image` positives (and as many negatives) per eval image.
  int questions_per_image = 3;
  int prompts_per_image = 1;
  int pope_per_image = 3;

  // Replace an existing world directory at out_dir (only one with a world.json).
  bool overwrite = false;
  // Worker threads for rendering and PNG encoding (the files do not depend on it).
  int threads = 1;
};

}  // namespace p2dpo::world
