#include "pairs/heatmap.h"

#include <algorithm>
#include <cmath>

namespace p2dpo::pairs {

namespace {
// A perceptually ordered dark-blue -> red ramp (piecewise-linear "jet"), t in [0, 1].
void ramp(double t, double rgb[3]) {
  t = std::clamp(t, 0.0, 1.0);
  auto piece = [](double x) { return std::clamp(1.5 - std::abs(4.0 * x), 0.0, 1.0); };
  rgb[0] = piece(t - 0.75);
  rgb[1] = piece(t - 0.5);
  rgb[2] = piece(t - 0.25);
}

void draw_box(image::ImageU8& img, const PixelBox& b, const uint8_t colour[3], int thickness) {
  const int x1 = std::clamp(b.x1, 0, img.width - 1), x2 = std::clamp(b.x2 - 1, 0, img.width - 1);
  const int y1 = std::clamp(b.y1, 0, img.height - 1), y2 = std::clamp(b.y2 - 1, 0, img.height - 1);
  for (int t = 0; t < thickness; ++t) {
    for (int x = x1; x <= x2; ++x) {
      std::copy(colour, colour + 3, img.at(x, std::min(y1 + t, y2)));
      std::copy(colour, colour + 3, img.at(x, std::max(y2 - t, y1)));
    }
    for (int y = y1; y <= y2; ++y) {
      std::copy(colour, colour + 3, img.at(std::min(x1 + t, x2), y));
      std::copy(colour, colour + 3, img.at(std::max(x2 - t, x1), y));
    }
  }
}
}  // namespace

image::ImageU8 attention_overlay(const image::ImageU8& img, const AttentionGrid& map, const PixelBox& crop,
                                 const std::optional<PixelBox>& inverse_crop, double opacity) {
  image::ImageU8 out = img;
  if (map.rows <= 0 || map.cols <= 0 || map.values.empty()) return out;
  const auto [lo_it, hi_it] = std::minmax_element(map.values.begin(), map.values.end());
  const double lo = *lo_it, span = *hi_it - *lo_it;
  for (int y = 0; y < img.height; ++y) {
    const int r = std::min(map.rows - 1, static_cast<int>(static_cast<int64_t>(y) * map.rows / img.height));
    for (int x = 0; x < img.width; ++x) {
      const int c = std::min(map.cols - 1, static_cast<int>(static_cast<int64_t>(x) * map.cols / img.width));
      double rgb[3];
      ramp(span > 0 ? (map.at(r, c) - lo) / span : 0.0, rgb);
      uint8_t* px = out.at(x, y);
      for (int k = 0; k < 3; ++k)
        px[k] = static_cast<uint8_t>(std::lround((1.0 - opacity) * px[k] + opacity * 255.0 * rgb[k]));
    }
  }
  const int thickness = std::max(1, std::min(img.width, img.height) / 100);
  if (inverse_crop) {
    const uint8_t blue[3] = {40, 90, 255};
    draw_box(out, *inverse_crop, blue, thickness);
  }
  const uint8_t red[3] = {255, 30, 30};
  draw_box(out, crop, red, thickness);
  return out;
}

}  // namespace p2dpo::pairs
