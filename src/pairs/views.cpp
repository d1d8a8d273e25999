#include "pairs/views.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "image/noise.h"

namespace p2dpo::pairs {

namespace {

PixelBox clipped(const PixelBox& box, int width, int height) {
  PixelBox b;
  b.x1 = std::clamp(box.x1, 0, width);
  b.y1 = std::clamp(box.y1, 0, height);
  b.x2 = std::clamp(box.x2, 0, width);
  b.y2 = std::clamp(box.y2, 0, height);
  return b;
}

bool is_empty(const PixelBox& b) { return b.x2 <= b.x1 || b.y2 <= b.y1; }

std::string describe(const PixelBox& b) {
  return "[" + std::to_string(b.x1) + ", " + std::to_string(b.y1) + ", " + std::to_string(b.x2) + ", " +
         std::to_string(b.y2) + ")";
}

// The box to erase: clipped, optionally grown by PIL's inclusive end point, never empty.
PixelBox erase_area(const image::ImageU8& img, const PixelBox& box, bool inclusive_end) {
  PixelBox b = box;
  if (inclusive_end) {
    b.x2 += 1;
    b.y2 += 1;
  }
  b = clipped(b, img.width, img.height);
  if (is_empty(b))
    throw std::invalid_argument("erase box " + describe(box) + " is empty inside a " + std::to_string(img.width) + "x" +
                                std::to_string(img.height) + " image");
  return b;
}

// tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0)): numpy sums in float64, which is
// exact for these integer totals, divides once, and int() truncates.
std::array<int, 3> truncated_mean_colour(const image::ImageU8& img) {
  std::array<uint64_t, 3> sum{0, 0, 0};
  const size_t n = static_cast<size_t>(img.width) * img.height;
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c) sum[c] += img.rgb[i * 3 + c];
  std::array<int, 3> mean{};
  for (int c = 0; c < 3; ++c) mean[c] = static_cast<int>(static_cast<double>(sum[c]) / static_cast<double>(n));
  return mean;
}

uint8_t round_to_u8(double v) {
  const double r = std::floor(v + 0.5);
  return static_cast<uint8_t>(r < 0.0 ? 0.0 : (r > 255.0 ? 255.0 : r));
}

void blur_inside(image::ImageU8& out, const image::ImageU8& img, const PixelBox& b, double sigma) {
  if (sigma <= 0.0) sigma = std::min(b.width(), b.height()) / 8.0;
  if (!std::isfinite(sigma)) throw std::invalid_argument("erase blur sigma must be finite");
  const int radius = static_cast<int>(std::ceil(3.0 * sigma));
  std::vector<double> kernel(2 * radius + 1);
  double total = 0.0;
  for (int k = -radius; k <= radius; ++k) {
    kernel[k + radius] = std::exp(-static_cast<double>(k * k) / (2.0 * sigma * sigma));
    total += kernel[k + radius];
  }
  for (auto& w : kernel) w /= total;

  const int W = img.width, H = img.height;
  // Horizontal pass over the rows the vertical pass reads (box rows +- radius, clamped), box columns only.
  const int row0 = std::max(0, b.y1 - radius), row1 = std::min(H, b.y2 + radius);
  const int bw = b.width();
  std::vector<double> horizontal(static_cast<size_t>(row1 - row0) * bw * 3, 0.0);
  for (int y = row0; y < row1; ++y)
    for (int x = b.x1; x < b.x2; ++x) {
      double acc[3] = {0.0, 0.0, 0.0};
      for (int k = -radius; k <= radius; ++k) {
        const uint8_t* p = img.at(std::clamp(x + k, 0, W - 1), y);
        const double w = kernel[k + radius];
        for (int c = 0; c < 3; ++c) acc[c] += w * p[c];
      }
      double* dst = &horizontal[(static_cast<size_t>(y - row0) * bw + (x - b.x1)) * 3];
      for (int c = 0; c < 3; ++c) dst[c] = acc[c];
    }
  for (int y = b.y1; y < b.y2; ++y)
    for (int x = b.x1; x < b.x2; ++x) {
      double acc[3] = {0.0, 0.0, 0.0};
      for (int k = -radius; k <= radius; ++k) {
        const int yy = std::clamp(y + k, 0, H - 1);  // always inside [row0, row1)
        const double* src = &horizontal[(static_cast<size_t>(yy - row0) * bw + (x - b.x1)) * 3];
        const double w = kernel[k + radius];
        for (int c = 0; c < 3; ++c) acc[c] += w * src[c];
      }
      uint8_t* p = out.at(x, y);
      for (int c = 0; c < 3; ++c) p[c] = round_to_u8(acc[c]);
    }
}

uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

const std::vector<double>& alpha_bar_table() {
  static const std::vector<double> table = [] {
    constexpr int kSteps = 1000;
    std::vector<double> ab(kSteps);
    double prod = 1.0;
    for (int i = 0; i < kSteps; ++i) {
      const double t = -6.0 + 12.0 * i / (kSteps - 1);  // linspace(-6, 6, 1000)
      const double beta = 1.0 / (1.0 + std::exp(-t)) * (5e-3 - 1e-5) + 1e-5;
      prod *= 1.0 - beta;
      ab[i] = prod;
    }
    return ab;
  }();
  return table;
}

}  // namespace

image::ImageU8 crop_view(const image::ImageU8& img, const PixelBox& box) {
  const PixelBox b = clipped(box, img.width, img.height);
  if (is_empty(b))
    throw std::invalid_argument("crop box " + describe(box) + " is empty inside a " + std::to_string(img.width) + "x" +
                                std::to_string(img.height) + " image");
  image::ImageU8 out(b.width(), b.height());
  const size_t row_bytes = static_cast<size_t>(b.width()) * 3;
  for (int y = b.y1; y < b.y2; ++y) std::copy_n(img.at(b.x1, y), row_bytes, out.at(0, y - b.y1));
  return out;
}

image::ImageU8 erase_region(const image::ImageU8& img, const PixelBox& box, const EraseConfig& cfg) {
  if (cfg.mode != "mean" && cfg.mode != "blur" && cfg.mode != "alpha")
    throw std::invalid_argument("erase mode '" + cfg.mode + "' is not one of mean, blur, alpha");
  const PixelBox b = erase_area(img, box, cfg.pil_inclusive_end);
  image::ImageU8 out = img;
  if (cfg.mode == "blur") {
    blur_inside(out, img, b, cfg.blur_sigma);
    return out;
  }
  const std::array<int, 3> mean = truncated_mean_colour(img);
  if (cfg.mode == "mean") {
    for (int y = b.y1; y < b.y2; ++y)
      for (int x = b.x1; x < b.x2; ++x)
        for (int c = 0; c < 3; ++c) out.at(x, y)[c] = static_cast<uint8_t>(mean[c]);
    return out;
  }
  if (!(cfg.alpha >= 0.0 && cfg.alpha <= 1.0)) throw std::invalid_argument("erase alpha must lie in [0, 1]");
  for (int y = b.y1; y < b.y2; ++y)
    for (int x = b.x1; x < b.x2; ++x) {
      uint8_t* p = out.at(x, y);
      for (int c = 0; c < 3; ++c) p[c] = round_to_u8(cfg.alpha * mean[c] + (1.0 - cfg.alpha) * p[c]);
    }
  return out;
}

double erased_share(const PixelBox& box, int image_w, int image_h) {
  if (image_w <= 0 || image_h <= 0) throw std::invalid_argument("erased_share needs a non-empty image");
  const PixelBox b = clipped(box, image_w, image_h);
  if (is_empty(b)) return 0.0;
  return static_cast<double>(b.width()) * b.height() / (static_cast<double>(image_w) * image_h);
}

double diffusion_alpha_bar(int step) {
  const auto& table = alpha_bar_table();
  if (step < 0 || step >= static_cast<int>(table.size()))
    throw std::invalid_argument("diffusion step " + std::to_string(step) + " is outside [0, 999]");
  return table[step];
}

torch::Tensor add_diffusion_noise(const torch::Tensor& normalized_pixels, int step, uint64_t seed) {
  if (!normalized_pixels.defined() || !normalized_pixels.is_floating_point())
    throw std::invalid_argument("add_diffusion_noise needs a floating-point pixel tensor");
  const double ab = diffusion_alpha_bar(step);
  const double keep = std::sqrt(ab), mix = std::sqrt(1.0 - ab);
  // On the host in double: one rounding to float32 at the end, the same on every machine and device.
  auto x = normalized_pixels.detach().to(torch::kCPU, torch::kDouble).contiguous();
  auto out = torch::empty(x.sizes(), torch::TensorOptions().dtype(torch::kFloat));
  const double* src = x.data_ptr<double>();
  float* dst = out.data_ptr<float>();
  image::GaussianStream eps(seed);
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(keep * src[i] + mix * eps.next());
  return out.to(normalized_pixels.device());
}

models::PreparedImage noisy_view(const models::VisionLanguageModel& model, const image::ImageU8& img,
                                 const NoiseConfig& cfg, uint64_t seed) {
  if (cfg.mode == "diffusion") {
    models::PreparedImage p = model.prepare_image(img);
    p.pixel_values = add_diffusion_noise(p.pixel_values, cfg.diffusion_step, seed);
    return p;
  }
  if (cfg.mode == "pixel") return model.prepare_image(image::add_pixel_gaussian_noise(img, cfg.pixel_sigma, seed));
  throw std::invalid_argument("noise mode '" + cfg.mode + "' is not one of diffusion, pixel");
}

uint64_t view_seed(uint64_t run_seed, const std::string& sample_id, const std::string& view) {
  return splitmix64(image::fnv1a64(sample_id + "/" + view) ^ splitmix64(run_seed));
}

}  // namespace p2dpo::pairs
