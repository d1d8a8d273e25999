#pragma once
// Adaptive cropping from an attention map: the paper's App. C, Algorithm 1, which is ViCrop's
// bbox_from_att_image_adaptive_org as called by the released P2-DPO code (method.md §2), followed
// by the released code's _clip_bbox. Torch-free.
//
// Per ratio r (in config order):
//   block size     bw = W/cols, bh = H/rows (pixels per map cell, float)
//   window cells   Nw = min(int(base_w*r/bw), cols), Nh = min(int(base_h*r/bh), rows)
//   whole map      Nw == cols and Nh == rows: r == 1 returns the full image at once
//                  (full_image = true); any other r is skipped (sharpness NaN)
//   sliding sums   S[y][x] = sum of the Nh x Nw window at top-left (x, y), every valid (x, y)
//   peak           the first maximum scanning x in the outer loop and y in the inner one
//                  (column-major, as the Python double loop: ties go to the smallest x, then y)
//   sharpness      D_r = (S_peak - mean of its <= 4 in-range neighbours in S (left, right, up,
//                  down)) / (Nw*Nh)
// The best r is the first maximum of D_r. With S = base*r_best and half = floor(S/2) (Python's
// float `S//2`), the centre is int(x*bw + bw*Nw/2) (likewise y), clamped first to >= half then to
// <= W - half; x1 = max(0, xc - half), x2 = min(W, xc + half); then 0 <= x1 <= W-1 and
// x1+1 <= x2 <= W. All of these are whole numbers already, so the final rounding (half to even,
// as Python's round()) never changes a value.
//
// Where Python would produce NaN or fail, we define the result (documented, never hit with
// LLaVA's 24x24 map and 336-px base unless an image side exceeds 24*336 px):
//   - Nw or Nh of 0 (a map cell wider than base*r pixels): clamped to 1 cell (Python sums an
//     empty window, gets D_r = 0/0 = NaN and np.argmax picks it, i.e. a corner box);
//   - a 1-cell sliding map (no neighbours; unreachable, since it implies the whole-map case):
//     D_r = S_peak/(Nw*Nh) (Python: mean([]) = NaN);
//   - every ratio skipped (only possible when the ratios do not contain 1.0): the full image.
// Bad input (empty map, size mismatch, non-finite values, image side <= 0, no ratios, base <= 0)
// throws std::invalid_argument.
#include <cstddef>
#include <vector>

#include "pairs/box.h"

namespace p2dpo::pairs {

// Row-major map over the image-token grid (rows = map height, cols = map width).
struct AttentionGrid {
  int rows = 0, cols = 0;
  std::vector<double> values;
  double at(int r, int c) const { return values[static_cast<std::size_t>(r) * cols + c]; }
};

// base_w x base_h: the base box in original-image pixels (the vision input side, 336 for
// LLaVA-1.5). A square base is the paper's; base_w != base_h is ViCrop's rectangular variant.
struct AdaptiveCropConfig {
  double base_w = 336, base_h = 336;
  std::vector<double> ratios = {1.0, 1.2, 1.4, 1.6, 1.8, 2.0};
};

struct AdaptiveCropResult {
  PixelBox box;
  bool full_image = false;  // the whole-map fallback fired: box = (0, 0, W, H)
  double ratio = 1.0;       // the selected ratio
  // The selected window on the map grid (top-left cell and size in cells); for the full-image
  // fallback the whole map.
  int win_col = 0, win_row = 0, win_cols = 0, win_rows = 0;
  std::vector<double> sharpness;  // D_r per configured ratio, NaN where not computed
};

AdaptiveCropResult adaptive_crop(const AttentionGrid& map, int image_w, int image_h,
                                 const AdaptiveCropConfig& cfg);

}  // namespace p2dpo::pairs
