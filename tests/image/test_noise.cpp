// Pixel-space Gaussian noise (evaluation spec §3.1): exact generator, seeding, quantisation,
// clipping and statistics. Golden values come from an independent Python implementation of
// mt19937_64 + the same Box-Muller transform (tests/data/pope/README.md).
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "image/noise.h"

using namespace p2dpo::image;

TEST(Noise, Fnv1aKnownVectors) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
  EXPECT_EQ(fnv1a64("COCO_val2014_000000310196.jpg"), 15743425977039344154ULL);
  EXPECT_EQ(noise_seed_for("a", 0), fnv1a64("a"));
  EXPECT_EQ(noise_seed_for("a", 5), fnv1a64("a") ^ 5ULL);
}

TEST(Noise, EngineIsTheStandardOne) {
  std::mt19937_64 e;  // the standard fixes the 10000th output of the default seed
  e.discard(9999);
  EXPECT_EQ(e(), 9981545732273789042ULL);
}

TEST(Noise, GoldenNormals) {
  const double expected[] = {-1.0771745442782885, -1.2860634502166481, 1.0945198485006107, 1.2616856516484893,
                             1.7947316657951717};
  auto z = gaussian_noise(5, 42);
  ASSERT_EQ(z.size(), 5u);
  // 1e-12: the golden values went through the same libm; a different one may differ in the last ulp.
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(z[i], expected[i], 1e-12) << i;
  GaussianStream s(42);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.next(), z[i]) << "stream and vector agree";
}

TEST(Noise, SameSeedSameDrawsOtherSeedOther) {
  EXPECT_EQ(gaussian_noise(1001, 7), gaussian_noise(1001, 7));
  EXPECT_NE(gaussian_noise(1001, 7), gaussian_noise(1001, 8));
  // A prefix is a prefix: n does not change earlier draws.
  auto long_run = gaussian_noise(100, 3);
  auto short_run = gaussian_noise(37, 3);
  EXPECT_TRUE(std::equal(short_run.begin(), short_run.end(), long_run.begin()));
}

TEST(Noise, StandardNormalStatistics) {
  const size_t n = 200000;
  auto z = gaussian_noise(n, 12345);
  double sum = 0, sq = 0, within1 = 0, within2 = 0;
  for (double v : z) {
    sum += v;
    sq += v * v;
    within1 += std::fabs(v) < 1.0;
    within2 += std::fabs(v) < 2.0;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  // Standard errors: mean 0.0022, variance 0.0032, fractions ~0.001; bounds are ~4-5 of them.
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.015);
  EXPECT_NEAR(within1 / n, 0.682689, 0.005);
  EXPECT_NEAR(within2 / n, 0.954500, 0.003);
}

TEST(Noise, PixelNoiseGoldenAndFormula) {
  ImageU8 img(2, 1);
  img.rgb = {0, 128, 255, 10, 20, 30};
  const uint64_t seed = noise_seed_for("img.png", 7);
  EXPECT_EQ(seed, 6261040153697677526ULL);
  auto out = add_pixel_gaussian_noise(img, 0.2, seed);
  EXPECT_EQ(out.rgb, (std::vector<uint8_t>{26, 0, 255, 0, 70, 63}));
  EXPECT_EQ(out.width, 2);
  EXPECT_EQ(out.height, 1);
  // The same by the formula of §3.1, draw by draw in HWC order.
  auto z = gaussian_noise(6, seed);
  for (size_t i = 0; i < 6; ++i) {
    double x = std::min(1.0, std::max(0.0, img.rgb[i] / 255.0 + 0.2 * z[i]));
    EXPECT_EQ(out.rgb[i], static_cast<uint8_t>(std::floor(255.0 * x + 0.5))) << i;
  }
}

TEST(Noise, SigmaZeroIsIdentityAndSeedsDiffer) {
  ImageU8 img(17, 9);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = static_cast<uint8_t>(i * 37 % 256);
  EXPECT_EQ(add_pixel_gaussian_noise(img, 0.0, 1).rgb, img.rgb);
  EXPECT_EQ(add_pixel_gaussian_noise(img, 0.1, 1).rgb, add_pixel_gaussian_noise(img, 0.1, 1).rgb);
  EXPECT_NE(add_pixel_gaussian_noise(img, 0.1, 1).rgb, add_pixel_gaussian_noise(img, 0.1, 2).rgb);
  EXPECT_NE(add_pixel_gaussian_noise(img, 0.1, 1).rgb, img.rgb);
  EXPECT_THROW(add_pixel_gaussian_noise(img, -0.1, 1), std::invalid_argument);
  EXPECT_THROW(add_pixel_gaussian_noise(img, NAN, 1), std::invalid_argument);
}

TEST(Noise, GreyImageStatisticsAndClipping) {
  ImageU8 grey(200, 100);
  std::fill(grey.rgb.begin(), grey.rgb.end(), 128);
  auto noisy = add_pixel_gaussian_noise(grey, 0.1, 99);
  double sum = 0, sq = 0;
  for (uint8_t v : noisy.rgb) {
    sum += v;
    sq += double(v) * v;
  }
  const double n = noisy.rgb.size(), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 128.0, 0.5);   // 60000 draws, se 0.1
  EXPECT_NEAR(sd, 25.5, 0.5);      // 0.1 * 255 (rounding adds 1/12 of variance)

  ImageU8 white(100, 100);
  std::fill(white.rgb.begin(), white.rgb.end(), 255);
  auto clipped = add_pixel_gaussian_noise(white, 0.3, 5);
  double at_max = 0;
  for (uint8_t v : clipped.rgb) at_max += v == 255;
  // Upward draws clip at 1.0 -> 255: half of them, plus the tiny downward ones that round back.
  EXPECT_NEAR(at_max / clipped.rgb.size(), 0.5, 0.02);
}
