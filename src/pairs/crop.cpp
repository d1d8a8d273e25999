#include "pairs/crop.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace p2dpo::pairs {
namespace {

void validate(const AttentionGrid& map, int image_w, int image_h, const AdaptiveCropConfig& cfg) {
  if (map.rows <= 0 || map.cols <= 0)
    throw std::invalid_argument("adaptive_crop: empty attention map (" + std::to_string(map.rows) +
                                "x" + std::to_string(map.cols) + ")");
  if (map.values.size() != static_cast<size_t>(map.rows) * static_cast<size_t>(map.cols))
    throw std::invalid_argument("adaptive_crop: attention map has " +
                                std::to_string(map.values.size()) + " values, expected " +
                                std::to_string(map.rows) + "x" + std::to_string(map.cols));
  for (size_t i = 0; i < map.values.size(); ++i)
    if (!std::isfinite(map.values[i]))
      throw std::invalid_argument("adaptive_crop: attention map value " + std::to_string(i) +
                                  " is not finite");
  if (image_w <= 0 || image_h <= 0)
    throw std::invalid_argument("adaptive_crop: image size " + std::to_string(image_w) + "x" +
                                std::to_string(image_h) + " is not positive");
  if (!(std::isfinite(cfg.base_w) && cfg.base_w > 0 && std::isfinite(cfg.base_h) && cfg.base_h > 0))
    throw std::invalid_argument("adaptive_crop: base box must be positive and finite");
  if (cfg.ratios.empty()) throw std::invalid_argument("adaptive_crop: no crop ratios");
  for (double r : cfg.ratios)
    if (!(std::isfinite(r) && r > 0))
      throw std::invalid_argument("adaptive_crop: crop ratios must be positive and finite");
}

// Python's int(target / block) capped at the map side; at least one cell (see crop.h).
int window_cells(double target, double block, int side) {
  const double q = target / block;
  const int n = q >= side ? side : static_cast<int>(q);
  return std::max(n, 1);
}

// Python's round(): half to even (the default floating-point rounding mode).
int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

// _clip_bbox of the released run.py, then rounded to int.
PixelBox clip_box(double x1, double y1, double x2, double y2, int w, int h) {
  x1 = std::max(0.0, std::min(static_cast<double>(w - 1), x1));
  y1 = std::max(0.0, std::min(static_cast<double>(h - 1), y1));
  x2 = std::max(x1 + 1, std::min(static_cast<double>(w), x2));
  y2 = std::max(y1 + 1, std::min(static_cast<double>(h), y2));
  return PixelBox{round_half_even(x1), round_half_even(y1), round_half_even(x2),
                  round_half_even(y2)};
}

AdaptiveCropResult full_image_result(const AttentionGrid& map, int w, int h, double ratio,
                                     std::vector<double> sharpness) {
  AdaptiveCropResult res;
  res.box = clip_box(0, 0, w, h, w, h);
  res.full_image = true;
  res.ratio = ratio;
  res.win_cols = map.cols;
  res.win_rows = map.rows;
  res.sharpness = std::move(sharpness);
  return res;
}

struct Candidate {
  double ratio;
  int x, y, nw, nh;
};

}  // namespace

AdaptiveCropResult adaptive_crop(const AttentionGrid& map, int image_w, int image_h,
                                 const AdaptiveCropConfig& cfg) {
  validate(map, image_w, image_h, cfg);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double block_w = static_cast<double>(image_w) / map.cols;
  const double block_h = static_cast<double>(image_h) / map.rows;

  std::vector<double> sharpness(cfg.ratios.size(), nan);
  double best_d = 0;
  int best_index = -1;
  Candidate best{};
  std::vector<double> sliding;

  for (size_t ri = 0; ri < cfg.ratios.size(); ++ri) {
    const double ratio = cfg.ratios[ri];
    const int nw = window_cells(cfg.base_w * ratio, block_w, map.cols);
    const int nh = window_cells(cfg.base_h * ratio, block_h, map.rows);
    if (nw >= map.cols && nh >= map.rows) {
      if (ratio == 1.0) return full_image_result(map, image_w, image_h, ratio, sharpness);
      continue;
    }

    // Sliding sums, each summed row by row over its own window so windows with the same contents
    // get bit-identical sums (a summed-area table would break exact ties by rounding).
    const int sx = map.cols - nw + 1, sy = map.rows - nh + 1;
    sliding.assign(static_cast<size_t>(sx) * sy, 0.0);
    auto slide = [&](int y, int x) -> double& { return sliding[static_cast<size_t>(y) * sx + x]; };
    double max_att = -std::numeric_limits<double>::infinity();
    int px = 0, py = 0;
    for (int x = 0; x < sx; ++x) {    // x outer, y inner, strict '>':
      for (int y = 0; y < sy; ++y) {  // the first maximum in ViCrop's scan order
        double sum = 0;
        for (int r = y; r < y + nh; ++r)
          for (int c = x; c < x + nw; ++c) sum += map.at(r, c);
        slide(y, x) = sum;
        if (sum > max_att) {
          max_att = sum;
          px = x;
          py = y;
        }
      }
    }

    // Neighbours in the sliding-sum map, in ViCrop's order: left, right, up, down.
    double adj_sum = 0;
    int adj_n = 0;
    if (px > 0) adj_sum += slide(py, px - 1), ++adj_n;
    if (px < sx - 1) adj_sum += slide(py, px + 1), ++adj_n;
    if (py > 0) adj_sum += slide(py - 1, px), ++adj_n;
    if (py < sy - 1) adj_sum += slide(py + 1, px), ++adj_n;
    const double adj_mean = adj_n > 0 ? adj_sum / adj_n : 0.0;  // 1-cell map: see crop.h
    const double d = (max_att - adj_mean) / (static_cast<double>(nw) * nh);
    sharpness[ri] = d;
    if (best_index < 0 || d > best_d) {  // np.argmax: the first maximum
      best_d = d;
      best_index = static_cast<int>(ri);
      best = Candidate{ratio, px, py, nw, nh};
    }
  }
  if (best_index < 0) return full_image_result(map, image_w, image_h, 1.0, sharpness);

  const double side_w = cfg.base_w * best.ratio, side_h = cfg.base_h * best.ratio;
  const double half_w = std::floor(side_w / 2), half_h = std::floor(side_h / 2);  // Python S//2
  double xc = std::trunc(best.x * block_w + block_w * best.nw / 2);
  double yc = std::trunc(best.y * block_h + block_h * best.nh / 2);
  if (xc < half_w) xc = half_w;
  if (yc < half_h) yc = half_h;
  if (xc > image_w - half_w) xc = image_w - half_w;
  if (yc > image_h - half_h) yc = image_h - half_h;
  const double x1 = std::max(0.0, xc - half_w), y1 = std::max(0.0, yc - half_h);
  const double x2 = std::min(static_cast<double>(image_w), xc + half_w);
  const double y2 = std::min(static_cast<double>(image_h), yc + half_h);

  AdaptiveCropResult res;
  res.box = clip_box(x1, y1, x2, y2, image_w, image_h);
  res.ratio = best.ratio;
  res.win_col = best.x;
  res.win_row = best.y;
  res.win_cols = best.nw;
  res.win_rows = best.nh;
  res.sharpness = std::move(sharpness);
  return res;
}

}  // namespace p2dpo::pairs
