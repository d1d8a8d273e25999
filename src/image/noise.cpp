#include "image/noise.h"

#include <cmath>
#include <stdexcept>

namespace p2dpo::image {

namespace {
constexpr double kTwoPi = 6.283185307179586476925286766559;
}  // namespace

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t noise_seed_for(const std::string& image_name, uint64_t global_seed) {
  return fnv1a64(image_name) ^ global_seed;
}

double GaussianStream::uniform() {
  // Top 53 bits -> a double in [0, 1) with every value exactly representable.
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double GaussianStream::next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  const double u1 = 1.0 - uniform();  // (0, 1]: log(u1) is finite
  const double u2 = uniform();
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = kTwoPi * u2;
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

std::vector<double> gaussian_noise(size_t n, uint64_t seed) {
  GaussianStream stream(seed);
  std::vector<double> out(n);
  for (auto& v : out) v = stream.next();
  return out;
}

ImageU8 add_pixel_gaussian_noise(const ImageU8& img, double sigma, uint64_t seed) {
  if (!(sigma >= 0.0) || !std::isfinite(sigma)) throw std::invalid_argument("noise sigma must be finite and >= 0");
  if (sigma == 0.0) return img;
  ImageU8 out = img;
  GaussianStream stream(seed);
  for (auto& v : out.rgb) {
    double x = v / 255.0 + sigma * stream.next();
    x = x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
    v = static_cast<uint8_t>(std::floor(255.0 * x + 0.5));
  }
  return out;
}

}  // namespace p2dpo::image
