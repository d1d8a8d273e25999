#pragma once
// Helpers shared by the world tests: hand-made scenes and the HF crop box in original pixels.
#include <array>
#include <vector>

#include "image/clip_processor.h"
#include "world/scene.h"
#include "world/vocabulary.h"

namespace p2dpo::world::test {

inline Object make_object(const Vocabulary& v, const std::string& cls_name, SizeClass size, int x0, int y0, int side) {
  Object o;
  o.cls = v.class_index(cls_name);
  o.shape = v.shape_of(o.cls);
  o.color = v.color_of(o.cls);
  o.size = size;
  o.x0 = x0;
  o.y0 = y0;
  o.x1 = x0 + side;
  o.y1 = y0 + side;
  o.rgb = v.color_rgb[o.color];
  return o;
}

// A 240 x 200 scene (central square x 20..220, y 0..200) with a flat grey background.
inline Scene make_scene(std::vector<Object> objects, int margin_px = 12) {
  Scene s;
  s.id = "test-000000";
  s.width = 240;
  s.height = 200;
  s.background.color0 = s.background.color1 = {128, 128, 128};
  s.objects = std::move(objects);
  s.relations = compute_relations(s.objects, margin_px);
  return s;
}

// The part of the original image that HF's CLIPImageProcessor keeps (resize short side to `side`,
// centre crop side x side), as [x0, y0, x1, y1) in original pixels, shrunk inwards to whole pixels.
inline std::array<double, 4> hf_crop_box(int width, int height, int side) {
  image::ClipProcessorConfig cfg;
  cfg.shortest_edge = side;
  cfg.crop_height = cfg.crop_width = side;
  const auto hw = image::clip_resize_output_hw(height, width, cfg);
  const auto tl = image::center_crop_top_left(hw[0], hw[1], side, side);
  const double sx = static_cast<double>(width) / hw[1], sy = static_cast<double>(height) / hw[0];
  return {tl[1] * sx, tl[0] * sy, (tl[1] + side) * sx, (tl[0] + side) * sy};
}

}  // namespace p2dpo::world::test
