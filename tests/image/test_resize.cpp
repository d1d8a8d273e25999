#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "image/resize.h"

namespace p2dpo::image {
namespace {

// The worked coefficient table of spec §C.4 (640 -> 448, ratio 10/7).
TEST(ResizeCoefficients, Downscale640To448MatchesSpecTable) {
  const ResampleCoefficients c = pil_bicubic_coefficients(640, 448);
  EXPECT_EQ(c.ksize, 7);
  struct Row {
    int index, xmin;
    std::vector<double> weights;
    std::vector<int32_t> fixed;
  };
  const std::vector<Row> rows = {
      {0, 0, {0.692248062, 0.359917921, -0.05129959, -0.000866393}, {2903499, 1509605, -215166, -3634}},
      {1, 0, {-0.037802485, 0.439808153, 0.604970569, 0.020797907, -0.027774144},
       {-158555, 1844689, 2537430, 87233, -116493}},
      {447, 636, {-0.000866393, -0.05129959, 0.359917921, 0.692248062}, {-3634, -215166, 1509605, 2903499}},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.index);
    EXPECT_EQ(c.xmin[r.index], r.xmin);
    ASSERT_EQ(c.count[r.index], static_cast<int>(r.weights.size()));
    double sum = 0;
    for (size_t i = 0; i < r.weights.size(); ++i) {
      EXPECT_NEAR(c.weights[r.index * c.ksize + i], r.weights[i], 5e-9);
      EXPECT_EQ(c.fixed[r.index * c.ksize + i], r.fixed[i]);
      sum += c.weights[r.index * c.ksize + i];
    }
    EXPECT_NEAR(sum, 1.0, 1e-12);  // normalised, which matters at the clipped borders
  }
  // 480 -> 336 has the same ratio, hence the same first row.
  const ResampleCoefficients same_ratio = pil_bicubic_coefficients(480, 336);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(same_ratio.fixed[i], c.fixed[i]);
}

TEST(ResizeCoefficients, Upscale200To336FirstOutput) {
  const ResampleCoefficients c = pil_bicubic_coefficients(200, 336);
  EXPECT_EQ(c.ksize, 5);  // no support widening when upscaling
  EXPECT_EQ(c.xmin[0], 0);
  ASSERT_EQ(c.count[0], 2);
  EXPECT_NEAR(c.weights[0], 1.076126186, 5e-10);
  EXPECT_NEAR(c.weights[1], -0.076126186, 5e-10);
  EXPECT_EQ(c.fixed[0], 4513600);
  EXPECT_EQ(c.fixed[1], -319296);
}

TEST(ResizeCoefficients, KernelShape) {
  EXPECT_EQ(pil_bicubic_kernel(0.0), 1.0);
  EXPECT_EQ(pil_bicubic_kernel(1.0), 0.0);
  EXPECT_EQ(pil_bicubic_kernel(2.0), 0.0);
  EXPECT_DOUBLE_EQ(pil_bicubic_kernel(0.5), pil_bicubic_kernel(-0.5));
  EXPECT_DOUBLE_EQ(pil_bicubic_kernel(1.5), -0.0625);  // a = -0.5 lobe
}

TEST(Resize, SameSizeIsACopyAndConstantImagesStayConstant) {
  ImageU8 img(9, 4);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = static_cast<uint8_t>(i * 7);
  EXPECT_EQ(resize_bicubic_pil(img, 9, 4).rgb, img.rgb);
  ImageU8 flat(13, 7);
  for (size_t i = 0; i < flat.rgb.size(); i += 3) flat.rgb[i] = 200, flat.rgb[i + 1] = 0, flat.rgb[i + 2] = 255;
  for (auto [w, h] : {std::pair{5, 3}, {26, 14}, {13, 20}, {4, 7}}) {
    const ImageU8 out = resize_bicubic_pil(flat, w, h);
    ASSERT_EQ(out.width, w);
    ASSERT_EQ(out.height, h);
    for (size_t i = 0; i < out.rgb.size(); i += 3) {
      ASSERT_EQ(out.rgb[i], 200);
      ASSERT_EQ(out.rgb[i + 1], 0);
      ASSERT_EQ(out.rgb[i + 2], 255);
    }
  }
}

TEST(Resize, OvershootIsClippedNotWrapped) {
  ImageU8 edge(8, 1);  // a hard 0 -> 255 step rings under bicubic upscaling
  for (int x = 4; x < 8; ++x) edge.at(x, 0)[0] = edge.at(x, 0)[1] = edge.at(x, 0)[2] = 255;
  const ImageU8 up = resize_bicubic_pil(edge, 32, 1);
  bool saw_zero = false, saw_full = false;
  for (int x = 0; x < 32; ++x) {
    saw_zero |= up.at(x, 0)[0] == 0;
    saw_full |= up.at(x, 0)[0] == 255;
  }
  EXPECT_TRUE(saw_zero);
  EXPECT_TRUE(saw_full);
  for (int x = 1; x < 32; ++x) EXPECT_GE(up.at(x, 0)[0], up.at(x - 1, 0)[0]) << x;  // clipped, so monotone
}

TEST(Resize, RejectsNonPositiveSizes) {
  ImageU8 img(2, 2);
  EXPECT_THROW(resize_bicubic_pil(img, 0, 2), std::invalid_argument);
  EXPECT_THROW(resize_bicubic_pil(ImageU8(), 2, 2), std::invalid_argument);
}

}  // namespace
}  // namespace p2dpo::image
