// Adaptive crop (App. C, Algorithm 1 = ViCrop's bbox_from_att_image_adaptive_org) on hand-made
// maps. Expected boxes and sharpness values are worked out by hand in the comments (and agree with
// a line-by-line transliteration of the Python function).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "pairs/crop.h"

namespace p2dpo::pairs {
namespace {

AttentionGrid grid(int rows, int cols, const std::map<std::pair<int, int>, double>& cells,
                   double fill = 0.0) {
  AttentionGrid g;
  g.rows = rows;
  g.cols = cols;
  g.values.assign(static_cast<size_t>(rows) * cols, fill);
  for (const auto& [rc, v] : cells) g.values[static_cast<size_t>(rc.first) * cols + rc.second] = v;
  return g;
}

// The world's setting: 6x6 map, 288x288 image (48 px per cell), base box 96 px.
// Window cells per ratio 1.0..2.0: 96r/48 = 2, 2.4, 2.8, 3.2, 3.6, 4 -> N = 2, 2, 2, 3, 3, 4.
AdaptiveCropConfig base96() {
  AdaptiveCropConfig cfg;
  cfg.base_w = cfg.base_h = 96;
  return cfg;
}

void expect_box(const PixelBox& b, int x1, int y1, int x2, int y2) {
  EXPECT_EQ(b.x1, x1);
  EXPECT_EQ(b.y1, y1);
  EXPECT_EQ(b.x2, x2);
  EXPECT_EQ(b.y2, y2);
}

void expect_sharpness(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i]))
      EXPECT_TRUE(std::isnan(got[i])) << "ratio index " << i;
    else
      EXPECT_NEAR(got[i], want[i], 1e-12) << "ratio index " << i;
  }
}

TEST(AdaptiveCrop, SingleHotCellTiesGoToTheTopLeftWindowContainingIt) {
  // Hot cell at row 2, col 3. N=2: the four windows holding it (x in {2,3}, y in {1,2}) tie at 1;
  // x-major scan keeps (x=2, y=1). Neighbours: left 0, right 1, up 0, down 1 -> mean 0.5,
  // D = (1-0.5)/4 = 0.125. N=3: peak (1,0); left 0, right 1, down 1 -> D = (1-2/3)/9 = 1/27.
  // N=4: every window holds it -> D = 0. Best: ratio 1.0, window (2,1).
  // Centre x = int(2*48 + 48*2/2) = 144, y = int(48 + 48) = 96; half = 48 -> (96, 48, 192, 144):
  // the hot cell (x 144..192, y 96..144) sits in the box's bottom-right quarter.
  const auto res = adaptive_crop(grid(6, 6, {{{2, 3}, 1.0}}), 288, 288, base96());
  expect_box(res.box, 96, 48, 192, 144);
  EXPECT_FALSE(res.full_image);
  EXPECT_DOUBLE_EQ(res.ratio, 1.0);
  EXPECT_EQ(res.win_col, 2);
  EXPECT_EQ(res.win_row, 1);
  EXPECT_EQ(res.win_cols, 2);
  EXPECT_EQ(res.win_rows, 2);
  expect_sharpness(res.sharpness, {0.125, 0.125, 0.125, 1.0 / 27, 1.0 / 27, 0.0});
}

TEST(AdaptiveCrop, HotBlockSelectsTheRatioWhoseWindowFitsIt) {
  // 3x3 block of ones at rows 1-3, cols 2-4. N=2: peak 4 at (2,1), neighbours 2, 4, 2, 4 ->
  // D = (4-3)/4 = 0.25. N=3: peak 9 at (2,1), all four neighbours 6 -> D = 3/9.
  // N=4: peak 9 at (1,0); left 6, right 9, down 9 -> D = (9-8)/16 = 0.0625.
  // Best: the first 1/3, ratio 1.6; S = 153.6, half = 76. Centre x = int(96 + 72) = 168,
  // y = int(48 + 72) = 120 -> (92, 44, 244, 196), holding the block (x 96..240, y 48..192).
  std::map<std::pair<int, int>, double> cells;
  for (int r = 1; r <= 3; ++r)
    for (int c = 2; c <= 4; ++c) cells[{r, c}] = 1.0;
  const auto res = adaptive_crop(grid(6, 6, cells), 288, 288, base96());
  expect_box(res.box, 92, 44, 244, 196);
  EXPECT_DOUBLE_EQ(res.ratio, 1.6);
  EXPECT_EQ(res.win_col, 2);
  EXPECT_EQ(res.win_row, 1);
  EXPECT_EQ(res.win_cols, 3);
  EXPECT_EQ(res.win_rows, 3);
  expect_sharpness(res.sharpness, {0.25, 0.25, 0.25, 1.0 / 3, 1.0 / 3, 0.0625});
}

TEST(AdaptiveCrop, CentreIsClampedInsideTheImage) {
  // 3x3 block in the top-left corner. N=2: (0,0) with neighbours 4, 4 -> D = 0. N=3: 9 vs 6, 6 ->
  // D = 1/3. N=4: 9 vs 6, 6 -> 3/16. Ratio 1.6, half 76; centre int(0 + 72) = 72 < 76 -> 76 in
  // both axes -> (0, 0, 152, 152).
  std::map<std::pair<int, int>, double> cells;
  for (int r = 0; r <= 2; ++r)
    for (int c = 0; c <= 2; ++c) cells[{r, c}] = 1.0;
  const auto res = adaptive_crop(grid(6, 6, cells), 288, 288, base96());
  expect_box(res.box, 0, 0, 152, 152);
  EXPECT_DOUBLE_EQ(res.ratio, 1.6);
  expect_sharpness(res.sharpness, {0.0, 0.0, 0.0, 1.0 / 3, 1.0 / 3, 3.0 / 16});
}

TEST(AdaptiveCrop, UniformMapTakesTheFirstPositionAndTheSmallestRatio) {
  // All sliding sums tie -> (0,0) and D = 0 for every ratio -> ratio 1.0 (np.argmax's first);
  // centre int(48) = 48 -> (0, 0, 96, 96).
  const auto res = adaptive_crop(grid(6, 6, {}, 0.5), 288, 288, base96());
  expect_box(res.box, 0, 0, 96, 96);
  EXPECT_DOUBLE_EQ(res.ratio, 1.0);
  EXPECT_EQ(res.win_col, 0);
  EXPECT_EQ(res.win_row, 0);
  expect_sharpness(res.sharpness, {0, 0, 0, 0, 0, 0});
}

TEST(AdaptiveCrop, TiesBetweenPeaksFollowTheColumnMajorScan) {
  // Two equal hot cells: (row 4, col 1) and (row 1, col 4). N=2: windows holding the first are at
  // x in {0,1}, those holding the second at x in {3,4}; the x-outer scan meets (x=0, y=3) first
  // (a row-major scan would pick (x=3, y=0) and give (144, 0, 240, 96)). Neighbours: right 1,
  // up 0, down 1 -> D = (1/3)/4. N=3: D = (1/3)/9. N=4: window (1,1) holds both (2), its four
  // neighbours 1 each -> D = 1/16. Best ratio 1.0; centre (int(0+48), int(144+48)) = (48, 192) ->
  // (0, 144, 96, 240).
  const auto res = adaptive_crop(grid(6, 6, {{{4, 1}, 1.0}, {{1, 4}, 1.0}}), 288, 288, base96());
  expect_box(res.box, 0, 144, 96, 240);
  EXPECT_EQ(res.win_col, 0);
  EXPECT_EQ(res.win_row, 3);
  expect_sharpness(res.sharpness, {1.0 / 12, 1.0 / 12, 1.0 / 12, 1.0 / 27, 1.0 / 27, 1.0 / 16});
}

TEST(AdaptiveCrop, OneByOneMapGivesTheFullImage) {
  // Block 288 px > base 96: int(96/288) = 0 cells, clamped to 1 (see crop.h; Python would sum an
  // empty window and pick a NaN), which covers the whole map -> full image at ratio 1.
  const auto big = adaptive_crop(grid(1, 1, {{{0, 0}, 3.0}}), 288, 288, base96());
  EXPECT_TRUE(big.full_image);
  expect_box(big.box, 0, 0, 288, 288);
  EXPECT_EQ(big.win_cols, 1);
  EXPECT_EQ(big.win_rows, 1);
  expect_sharpness(big.sharpness, {NAN, NAN, NAN, NAN, NAN, NAN});
  // Block 50 px: int(96/50) = 1 -> whole map -> full image.
  const auto small = adaptive_crop(grid(1, 1, {{{0, 0}, 3.0}}), 50, 40, base96());
  EXPECT_TRUE(small.full_image);
  expect_box(small.box, 0, 0, 50, 40);
}

TEST(AdaptiveCrop, BoxLargerThanTheImageFallsBackToTheFullImage) {
  // 80x60 image, 6x6 map: blocks 13.3 x 10 px; 96 px -> min(7, 6) and min(9, 6) = whole map.
  const auto res = adaptive_crop(grid(6, 6, {{{2, 3}, 1.0}}), 80, 60, base96());
  EXPECT_TRUE(res.full_image);
  expect_box(res.box, 0, 0, 80, 60);
  EXPECT_DOUBLE_EQ(res.ratio, 1.0);
}

TEST(AdaptiveCrop, WholeMapAtALargerRatioIsSkipped) {
  // Base 144 on the 6x6/288 px map: N = 3, 3, 4, 4, 5 and 6 (whole map: skipped at ratio 2.0).
  // Hot cell (2,3). N=3: peak (1,0); left 0, right 1, down 1 -> D = 1/27. N=4, N=5: every window
  // holds it -> D = 0. Best ratio 1.0, window (1,0); centre (int(48+72), int(0+72)) = (120, 72),
  // half 72 -> (48, 0, 192, 144).
  AdaptiveCropConfig cfg;
  cfg.base_w = cfg.base_h = 144;
  const auto res = adaptive_crop(grid(6, 6, {{{2, 3}, 1.0}}), 288, 288, cfg);
  EXPECT_FALSE(res.full_image);
  expect_box(res.box, 48, 0, 192, 144);
  expect_sharpness(res.sharpness, {1.0 / 27, 1.0 / 27, 0, 0, 0, NAN});
}

TEST(AdaptiveCrop, AllRatiosSkippedGivesTheFullImage) {
  // Ratios without 1.0 whose windows all cover the map: Python would fail on np.argmax([]).
  AdaptiveCropConfig cfg = base96();
  cfg.ratios = {1.5, 2.0};
  const auto res = adaptive_crop(grid(2, 2, {{{0, 0}, 1.0}}), 100, 100, cfg);
  EXPECT_TRUE(res.full_image);
  expect_box(res.box, 0, 0, 100, 100);
  expect_sharpness(res.sharpness, {NAN, NAN});
}

TEST(AdaptiveCrop, NonSquareImageClampsEachAxis) {
  // 384x192 image, 4 rows x 8 cols (48 px cells), block of ones at rows 1-3, cols 5-7.
  // N=2 (3x7 sliding map): peak 4 at (5,1); neighbours 2, 4, 2, 4 -> D = 0.25.
  // N=3 (2x6): peak 9 at (5,1), the last column and row: left 6, up 6 -> D = 1/3.
  // N=4 covers all 4 rows but not the 8 columns, so it is computed (1x5 map): peak 9 at x=4,
  // left 6 -> D = 3/16. Best ratio 1.6, half 76: centre (int(240+72), int(48+72)) = (312, 120),
  // clamped to (384-76, 192-76) = (308, 116) -> (232, 40, 384, 192).
  std::map<std::pair<int, int>, double> cells;
  for (int r = 1; r <= 3; ++r)
    for (int c = 5; c <= 7; ++c) cells[{r, c}] = 1.0;
  const auto res = adaptive_crop(grid(4, 8, cells), 384, 192, base96());
  expect_box(res.box, 232, 40, 384, 192);
  EXPECT_DOUBLE_EQ(res.ratio, 1.6);
  EXPECT_EQ(res.win_col, 5);
  EXPECT_EQ(res.win_row, 1);
  expect_sharpness(res.sharpness, {0.25, 0.25, 0.25, 1.0 / 3, 1.0 / 3, 3.0 / 16});
}

TEST(AdaptiveCrop, RectangularBaseBox) {
  // Base 96 x 48 on the 6x6/288 px map: Nw = 2, 2, 2, 3, 3, 4 and Nh = 1, 1, 1, 1, 1, 2.
  // Hot cell (2,3). 2x1 windows: peak (2,2); left 0, right 1, up 0, down 0 -> D = 0.75/2.
  // 3x1: peak (1,2) -> D = 0.75/3. 4x2: peak (0,1); right 1, up 0, down 1 -> D = (1/3)/8.
  // Best ratio 1.0; centre (int(96+48), int(96+24)) = (144, 120), halves 48 and 24 ->
  // (96, 96, 192, 144).
  AdaptiveCropConfig cfg;
  cfg.base_w = 96;
  cfg.base_h = 48;
  const auto res = adaptive_crop(grid(6, 6, {{{2, 3}, 1.0}}), 288, 288, cfg);
  expect_box(res.box, 96, 96, 192, 144);
  EXPECT_EQ(res.win_cols, 2);
  EXPECT_EQ(res.win_rows, 1);
  expect_sharpness(res.sharpness, {0.375, 0.375, 0.375, 0.25, 0.25, 1.0 / 24});
}

TEST(AdaptiveCrop, CellWiderThanTheBaseBoxUsesOneCellWindows) {
  // 2x2 map on a 1000x1000 image: 500 px cells, int(336r/500) = 0 or 1 -> 1 cell for every ratio.
  // Hot cell (1,1): peak (1,1), left 0, up 0 -> D = 1 for every ratio -> ratio 1.0, S = 336,
  // half 168; centre int(500 + 250) = 750 -> (582, 582, 918, 918).
  AdaptiveCropConfig cfg;  // the paper's 336 px base
  const auto res = adaptive_crop(grid(2, 2, {{{1, 1}, 1.0}}), 1000, 1000, cfg);
  expect_box(res.box, 582, 582, 918, 918);
  expect_sharpness(res.sharpness, {1, 1, 1, 1, 1, 1});
}

TEST(AdaptiveCrop, LlavaScaleBoxStaysInsideTheImage) {
  // LLaVA-1.5 setting: 24x24 map, 336 px base, a 640x480 image (26.7 x 20 px cells, so windows of
  // 12 x 16 cells at ratio 1) with a hot spot at the right edge. Ratio 2.0 covers the whole map
  // (min(25, 24) x min(33, 24)) and is skipped. The values agree with a transliteration of the
  // Python function: ratio 1.0 wins and the centre is clamped to the right edge.
  const auto res = adaptive_crop(grid(24, 24, {{{12, 23}, 1.0}, {{11, 22}, 0.5}}), 640, 480,
                                 AdaptiveCropConfig{});
  EXPECT_FALSE(res.full_image);
  expect_box(res.box, 304, 0, 640, 336);
  EXPECT_DOUBLE_EQ(res.ratio, 1.0);
  EXPECT_EQ(res.win_cols, 12);
  EXPECT_EQ(res.win_rows, 16);
  ASSERT_EQ(res.sharpness.size(), 6u);
  EXPECT_NEAR(res.sharpness[0], 0.5 / 192, 1e-12);  // peak 1.5, mean of neighbours 1.0, 12*16 cells
  EXPECT_TRUE(std::isnan(res.sharpness[5]));
}

TEST(AdaptiveCrop, RejectsBadInput) {
  const AdaptiveCropConfig cfg = base96();
  auto message = [](auto fn) {
    try {
      fn();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { adaptive_crop(AttentionGrid{}, 100, 100, cfg); }).find("empty"),
            std::string::npos);
  AttentionGrid wrong = grid(2, 2, {});
  wrong.values.pop_back();
  EXPECT_NE(message([&] { adaptive_crop(wrong, 100, 100, cfg); }).find("3 values"),
            std::string::npos);
  AttentionGrid nan_map = grid(2, 2, {{{1, 0}, std::numeric_limits<double>::quiet_NaN()}});
  EXPECT_NE(message([&] { adaptive_crop(nan_map, 100, 100, cfg); }).find("not finite"),
            std::string::npos);
  EXPECT_NE(message([&] { adaptive_crop(grid(2, 2, {}), 0, 100, cfg); }).find("not positive"),
            std::string::npos);
  AdaptiveCropConfig no_ratios = cfg;
  no_ratios.ratios.clear();
  EXPECT_NE(message([&] { adaptive_crop(grid(2, 2, {}), 100, 100, no_ratios); }).find("ratios"),
            std::string::npos);
}

}  // namespace
}  // namespace p2dpo::pairs
