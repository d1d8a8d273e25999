// The views of a sample (method spec §3–§4) against hand-computed values: crop with clipping, the
// three erasures, the share an erasure covers, VCD's diffusion schedule and noise, the noisy view as
// the tiny LLaVA sees it, and the per-view seeds.
#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <stdexcept>

#include "image/decode.h"
#include "image/noise.h"
#include "models/load.h"
#include "pairs/views.h"
#include "test_paths.h"

using namespace p2dpo;
using pairs::PixelBox;

namespace {

// Pixel (x, y) = (10x + y, 100 + x, 200 + y): every pixel tells where it came from.
image::ImageU8 coordinate_image(int w, int h) {
  image::ImageU8 img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.at(x, y)[0] = static_cast<uint8_t>(10 * x + y);
      img.at(x, y)[1] = static_cast<uint8_t>(100 + x);
      img.at(x, y)[2] = static_cast<uint8_t>(200 + y);
    }
  return img;
}

image::ImageU8 uniform_image(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  image::ImageU8 img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.at(x, y)[0] = r;
      img.at(x, y)[1] = g;
      img.at(x, y)[2] = b;
    }
  return img;
}

image::ImageU8 pseudo_random_image(int w, int h, uint64_t seed) {
  image::ImageU8 img(w, h);
  uint64_t s = seed;
  for (auto& v : img.rgb) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    v = static_cast<uint8_t>(s >> 56);
  }
  return img;
}

bool inside(const PixelBox& b, int x, int y) { return x >= b.x1 && x < b.x2 && y >= b.y1 && y < b.y2; }

void expect_untouched_outside(const image::ImageU8& before, const image::ImageU8& after, const PixelBox& b) {
  ASSERT_EQ(before.width, after.width);
  ASSERT_EQ(before.height, after.height);
  for (int y = 0; y < before.height; ++y)
    for (int x = 0; x < before.width; ++x)
      if (!inside(b, x, y))
        for (int c = 0; c < 3; ++c) ASSERT_EQ(before.at(x, y)[c], after.at(x, y)[c]) << x << "," << y;
}

TEST(PairViews, CropIsPilCropOfTheClippedBox) {
  const auto img = coordinate_image(4, 3);
  // [2, 6) x [1, 5) clipped to [2, 4) x [1, 3): pixels (2,1) (3,1) / (2,2) (3,2).
  const auto crop = pairs::crop_view(img, {2, 1, 6, 5});
  ASSERT_EQ(crop.width, 2);
  ASSERT_EQ(crop.height, 2);
  EXPECT_EQ(crop.at(0, 0)[0], 21);
  EXPECT_EQ(crop.at(1, 0)[0], 31);
  EXPECT_EQ(crop.at(0, 1)[0], 22);
  EXPECT_EQ(crop.at(1, 1)[0], 32);
  EXPECT_EQ(crop.at(1, 1)[1], 103);
  EXPECT_EQ(crop.at(1, 1)[2], 202);

  const auto corner = pairs::crop_view(img, {-3, -3, 1, 1});
  ASSERT_EQ(corner.width, 1);
  ASSERT_EQ(corner.height, 1);
  EXPECT_EQ(corner.at(0, 0)[0], 0);

  const auto whole = pairs::crop_view(img, {0, 0, 4, 3});
  EXPECT_EQ(whole.rgb, img.rgb);

  EXPECT_THROW(pairs::crop_view(img, {5, 0, 7, 3}), std::invalid_argument);  // entirely right of the image
  EXPECT_THROW(pairs::crop_view(img, {1, 1, 1, 2}), std::invalid_argument);  // zero width
  EXPECT_THROW(pairs::crop_view(img, {3, 2, 1, 1}), std::invalid_argument);  // inverted
}

TEST(PairViews, MeanEraseFillsTheTruncatedMeanAndNothingElse) {
  // 3x2 image. R = 0 1 2 / 3 5 6: mean 17/6 = 2.83 -> 2 (truncation; rounding would give 3).
  // G = 255 everywhere -> 255. B = 10 10 10 / 10 10 11: mean 61/6 = 10.17 -> 10.
  image::ImageU8 img(3, 2);
  const int r[6] = {0, 1, 2, 3, 5, 6};
  for (int i = 0; i < 6; ++i) {
    img.rgb[i * 3 + 0] = static_cast<uint8_t>(r[i]);
    img.rgb[i * 3 + 1] = 255;
    img.rgb[i * 3 + 2] = i == 5 ? 11 : 10;
  }
  const PixelBox box{1, 0, 2, 2};  // the middle column
  const auto out = pairs::erase_region(img, box, {});
  for (int y = 0; y < 2; ++y) {
    EXPECT_EQ(out.at(1, y)[0], 2);
    EXPECT_EQ(out.at(1, y)[1], 255);
    EXPECT_EQ(out.at(1, y)[2], 10);
  }
  expect_untouched_outside(img, out, box);

  // A box reaching past the image is clipped: [2, 9) x [-4, 1) erases pixel (2, 0) only.
  const auto clipped = pairs::erase_region(img, {2, -4, 9, 1}, {});
  EXPECT_EQ(clipped.at(2, 0)[0], 2);
  expect_untouched_outside(img, clipped, {2, 0, 3, 1});

  // The released code's ImageDraw.rectangle also paints column x2 and row y2.
  pairs::EraseConfig pil;
  pil.pil_inclusive_end = true;
  const auto inclusive = pairs::erase_region(img, {0, 0, 1, 1}, pil);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x) EXPECT_EQ(inclusive.at(x, y)[0], 2) << x << "," << y;
  expect_untouched_outside(img, inclusive, {0, 0, 2, 2});

  EXPECT_THROW(pairs::erase_region(img, {3, 0, 5, 2}, {}), std::invalid_argument);
  pairs::EraseConfig bad;
  bad.mode = "smudge";
  EXPECT_THROW(pairs::erase_region(img, box, bad), std::invalid_argument);
}

TEST(PairViews, AlphaEraseBlendsTowardsTheMean) {
  const auto img = pseudo_random_image(7, 5, 3);
  const PixelBox box{1, 1, 5, 4};
  pairs::EraseConfig cfg;
  cfg.mode = "alpha";
  cfg.alpha = 0.0;
  EXPECT_EQ(pairs::erase_region(img, box, cfg).rgb, img.rgb);
  cfg.alpha = 1.0;
  EXPECT_EQ(pairs::erase_region(img, box, cfg).rgb, pairs::erase_region(img, box, {}).rgb);

  // Hand value: 3x2 image, R = 0 1 2 / 3 5 6 (mean 2); pixel R 5 at alpha 0.5 -> 0.5*2 + 0.5*5 = 3.5 -> 4
  // (half up); pixel R 1 at alpha 0.25 -> 0.25*2 + 0.75*1 = 1.25 -> 1.
  image::ImageU8 small(3, 2);
  const int r[6] = {0, 1, 2, 3, 5, 6};
  for (int i = 0; i < 6; ++i) small.rgb[i * 3] = static_cast<uint8_t>(r[i]);
  cfg.alpha = 0.5;
  auto half = pairs::erase_region(small, {1, 1, 2, 2}, cfg);
  EXPECT_EQ(half.at(1, 1)[0], 4);
  expect_untouched_outside(small, half, {1, 1, 2, 2});
  cfg.alpha = 0.25;
  EXPECT_EQ(pairs::erase_region(small, {1, 0, 2, 1}, cfg).at(1, 0)[0], 1);

  cfg.alpha = 1.5;
  EXPECT_THROW(pairs::erase_region(img, box, cfg), std::invalid_argument);
}

TEST(PairViews, BlurEraseIsASeparableGaussianInsideTheBoxOnly) {
  pairs::EraseConfig cfg;
  cfg.mode = "blur";
  // A uniform image stays as it is, with the default sigma and an explicit one.
  const auto flat = uniform_image(20, 12, 90, 17, 250);
  EXPECT_EQ(pairs::erase_region(flat, {3, 2, 15, 10}, cfg).rgb, flat.rgb);
  cfg.blur_sigma = 2.5;
  EXPECT_EQ(pairs::erase_region(flat, {0, 0, 20, 12}, cfg).rgb, flat.rgb);

  // An impulse of 255 at (4, 4) of a black 9x9 image, sigma 1 (radius 3): out(x, y) = 255 w(x-4) w(y-4)
  // with w(k) = exp(-k^2/2) / sum_{j=-3..3} exp(-j^2/2), rounded half up.
  image::ImageU8 impulse(9, 9);
  impulse.at(4, 4)[0] = 255;
  double z = 0.0;
  for (int j = -3; j <= 3; ++j) z += std::exp(-j * j / 2.0);
  auto w = [&](int k) { return std::abs(k) > 3 ? 0.0 : std::exp(-k * k / 2.0) / z; };
  cfg.blur_sigma = 1.0;
  const auto blurred = pairs::erase_region(impulse, {0, 0, 9, 9}, cfg);
  for (int y = 0; y < 9; ++y)
    for (int x = 0; x < 9; ++x) {
      const int expected = static_cast<int>(std::floor(255.0 * w(x - 4) * w(y - 4) + 0.5));
      EXPECT_EQ(blurred.at(x, y)[0], expected) << x << "," << y;
      EXPECT_EQ(blurred.at(x, y)[1], 0);
    }
  EXPECT_EQ(blurred.at(4, 4)[0], static_cast<int>(std::floor(255.0 * w(0) * w(0) + 0.5)));
  EXPECT_GT(blurred.at(5, 4)[0], 0);

  // Neighbours outside the box feed the blur; pixels outside the box are never written.
  const PixelBox column{3, 0, 4, 9};
  const auto one_column = pairs::erase_region(impulse, column, cfg);
  EXPECT_EQ(one_column.at(3, 4)[0], static_cast<int>(std::floor(255.0 * w(1) * w(0) + 0.5)));
  EXPECT_EQ(one_column.at(4, 4)[0], 255);
  expect_untouched_outside(impulse, one_column, column);

  const auto noisy = pseudo_random_image(30, 20, 11);
  const PixelBox box{5, 4, 18, 15};
  cfg.blur_sigma = 0.0;  // box's shorter side (11) / 8
  const auto out = pairs::erase_region(noisy, box, cfg);
  expect_untouched_outside(noisy, out, box);
  EXPECT_NE(out.rgb, noisy.rgb);
  EXPECT_EQ(out.rgb, pairs::erase_region(noisy, box, cfg).rgb);  // deterministic
}

TEST(PairViews, ErasedShareIsClippedAreaOverImageArea) {
  EXPECT_DOUBLE_EQ(pairs::erased_share({0, 0, 50, 25}, 100, 50), 0.25);
  EXPECT_DOUBLE_EQ(pairs::erased_share({-10, -10, 50, 25}, 100, 50), 0.25);
  EXPECT_DOUBLE_EQ(pairs::erased_share({-5, -5, 500, 500}, 100, 50), 1.0);
  EXPECT_DOUBLE_EQ(pairs::erased_share({18, 8, 23, 12}, 20, 10), 4.0 / 200.0);  // [18, 20) x [8, 10)
  EXPECT_DOUBLE_EQ(pairs::erased_share({10, 10, 13, 12}, 20, 10), 0.0);         // starts on the bottom edge
  EXPECT_DOUBLE_EQ(pairs::erased_share({200, 0, 300, 50}, 100, 50), 0.0);
  EXPECT_THROW(pairs::erased_share({0, 0, 1, 1}, 0, 5), std::invalid_argument);
}

TEST(PairViews, DiffusionScheduleMatchesVcd) {
  // Method spec §4: t = 600 -> 0.7342 x + 0.6789 eps; t = 500 -> 0.8630 / 0.5052.
  EXPECT_NEAR(std::sqrt(pairs::diffusion_alpha_bar(600)), 0.7342, 5e-5);
  EXPECT_NEAR(std::sqrt(1.0 - pairs::diffusion_alpha_bar(600)), 0.6789, 5e-5);
  EXPECT_NEAR(std::sqrt(pairs::diffusion_alpha_bar(500)), 0.8630, 5e-5);
  EXPECT_NEAR(std::sqrt(1.0 - pairs::diffusion_alpha_bar(500)), 0.5052, 5e-5);
  // Step 0: one factor, 1 - (sigmoid(-6) * (5e-3 - 1e-5) + 1e-5).
  const double beta0 = 1.0 / (1.0 + std::exp(6.0)) * (5e-3 - 1e-5) + 1e-5;
  EXPECT_DOUBLE_EQ(pairs::diffusion_alpha_bar(0), 1.0 - beta0);
  for (int t = 1; t < 1000; ++t) ASSERT_LT(pairs::diffusion_alpha_bar(t), pairs::diffusion_alpha_bar(t - 1));
  EXPECT_THROW(pairs::diffusion_alpha_bar(-1), std::invalid_argument);
  EXPECT_THROW(pairs::diffusion_alpha_bar(1000), std::invalid_argument);
}

TEST(PairViews, DiffusionNoiseIsTheFormulaWithGaussianStreamEpsilon) {
  torch::manual_seed(0);
  const auto x = torch::randn({3, 4, 5});
  const int step = 600;
  const uint64_t seed = 1234;
  const auto noisy = pairs::add_diffusion_noise(x, step, seed);
  ASSERT_EQ(noisy.scalar_type(), torch::kFloat);
  ASSERT_EQ(noisy.sizes(), x.sizes());
  const double ab = pairs::diffusion_alpha_bar(step);
  image::GaussianStream eps(seed);
  auto xs = x.contiguous();
  const float* px = xs.data_ptr<float>();
  const float* pn = noisy.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i)  // CHW order
    ASSERT_EQ(pn[i], static_cast<float>(std::sqrt(ab) * px[i] + std::sqrt(1.0 - ab) * eps.next())) << i;

  EXPECT_TRUE(torch::equal(noisy, pairs::add_diffusion_noise(x, step, seed)));
  EXPECT_FALSE(torch::equal(noisy, pairs::add_diffusion_noise(x, step, seed + 1)));
  EXPECT_FALSE(torch::equal(noisy, pairs::add_diffusion_noise(x, 500, seed)));
  // A double input gives the same float32 result.
  EXPECT_TRUE(torch::equal(noisy, pairs::add_diffusion_noise(x.to(torch::kDouble), step, seed)));
  EXPECT_THROW(pairs::add_diffusion_noise(x, 1000, seed), std::invalid_argument);
}

class PairViewsTinyLlava : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    model_ = models::load_model(test::data_path("llava-tiny-s0"));
    img_ = image::decode_image_file(test::data_path("llava-tiny-s0/image0.png"));
  }
  std::unique_ptr<models::VisionLanguageModel> model_;
  image::ImageU8 img_;
};

TEST_F(PairViewsTinyLlava, NoisyViewDiffusionNoisesTheNormalizedTensor) {
  const auto clean = model_->prepare_image(img_);
  const uint64_t seed = pairs::view_seed(7, "prompts-000001", "noise");
  pairs::NoiseConfig cfg;  // diffusion, step 600
  const auto noisy = pairs::noisy_view(*model_, img_, cfg, seed);
  EXPECT_TRUE(torch::equal(noisy.pixel_values, pairs::add_diffusion_noise(clean.pixel_values, 600, seed)));
  EXPECT_FALSE(torch::equal(noisy.pixel_values, clean.pixel_values));
  EXPECT_EQ(noisy.view.rgb, clean.view.rgb);  // the uint8 view stays clean
  EXPECT_EQ(noisy.grid_h, clean.grid_h);
  EXPECT_EQ(noisy.orig_width, img_.width);
  // Rebuilding the view (as training does) gives the same tensor.
  EXPECT_TRUE(torch::equal(noisy.pixel_values, pairs::noisy_view(*model_, img_, cfg, seed).pixel_values));
  // The noise is of the advertised size: (noisy - 0.7342 clean) / 0.6789 has unit variance.
  const double ab = pairs::diffusion_alpha_bar(600);
  const auto eps = (noisy.pixel_values - std::sqrt(ab) * clean.pixel_values) / std::sqrt(1.0 - ab);
  EXPECT_NEAR(eps.std().item<double>(), 1.0, 0.05);
}

TEST_F(PairViewsTinyLlava, NoisyViewPixelNoisesTheImageBeforePreprocessing) {
  pairs::NoiseConfig cfg;
  cfg.mode = "pixel";
  cfg.pixel_sigma = 0.2;
  const uint64_t seed = 99;
  const auto noisy = pairs::noisy_view(*model_, img_, cfg, seed);
  const auto expected = model_->prepare_image(image::add_pixel_gaussian_noise(img_, 0.2, seed));
  EXPECT_TRUE(torch::equal(noisy.pixel_values, expected.pixel_values));
  EXPECT_EQ(noisy.view.rgb, expected.view.rgb);
  EXPECT_NE(noisy.view.rgb, model_->prepare_image(img_).view.rgb);
  cfg.mode = "blur";
  EXPECT_THROW(pairs::noisy_view(*model_, img_, cfg, seed), std::invalid_argument);
}

TEST(PairViews, ViewSeedIsStableAndDistinctPerView) {
  // Pinned: changing the derivation would silently change every stored pair's views.
  EXPECT_EQ(pairs::view_seed(0, "train-000123", "noise"), 17364674969846003433ULL);
  const uint64_t noise = pairs::view_seed(0, "train-000123", "noise");
  EXPECT_EQ(noise, pairs::view_seed(0, "train-000123", "noise"));
  EXPECT_NE(noise, pairs::view_seed(0, "train-000123", "deg"));
  EXPECT_NE(noise, pairs::view_seed(0, "train-000123", "crop"));
  EXPECT_NE(noise, pairs::view_seed(1, "train-000123", "noise"));
  EXPECT_NE(noise, pairs::view_seed(0, "train-000124", "noise"));
  EXPECT_NE(pairs::view_seed(0, "a", "bc"), pairs::view_seed(0, "ab", "c"));
}

}  // namespace
