#pragma once
// Pixel-space Gaussian noise for robustness evaluation (evaluation spec §3.1), identical on every
// machine: the normals come from std::mt19937_64 (whose output the standard fixes) through our own
// Box-Muller transform, never from std::normal_distribution (its algorithm differs between standard
// libraries). The noise field of an image depends only on its name and the global seed, so every
// model sees the same noisy image at a given sigma, and the 6 POPE questions on one image share it.
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "image/image.h"

namespace p2dpo::image {

// 64-bit FNV-1a over the bytes of `s`.
uint64_t fnv1a64(const std::string& s);

// The per-image noise seed of §3.1: fnv1a64(image name) XOR global seed.
uint64_t noise_seed_for(const std::string& image_name, uint64_t global_seed);

// Standard normal draws: mt19937_64 -> two uniforms with 53-bit resolution -> Box-Muller, both
// outputs of each pair used in order (cos first, then sin).
class GaussianStream {
 public:
  explicit GaussianStream(uint64_t seed) : engine_(seed) {}
  double next();

 private:
  double uniform();  // [0, 1)
  std::mt19937_64 engine_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

// n draws of GaussianStream(seed).
std::vector<double> gaussian_noise(size_t n, uint64_t seed);

// §3.1: x = I/255; x' = clip(x + sigma * eps, 0, 1) with eps ~ N(0,1) per pixel and channel in HWC
// order; I' = floor(255 x' + 0.5). sigma is on the [0, 1] pixel scale; sigma == 0 returns `img`
// unchanged. A negative or non-finite sigma throws std::invalid_argument.
ImageU8 add_pixel_gaussian_noise(const ImageU8& img, double sigma, uint64_t seed);

}  // namespace p2dpo::image
