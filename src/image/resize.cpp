#include "image/resize.h"

#include <cmath>
#include <stdexcept>
#include <string>

// Bit-exactness with Pillow needs each double operation rounded on its own (no fused multiply-add).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace p2dpo::image {

double pil_bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

ResampleCoefficients pil_bicubic_coefficients(int in_size, int out_size) {
  if (in_size <= 0 || out_size <= 0)
    throw std::invalid_argument("pil_bicubic_coefficients: sizes must be positive, got " +
                                std::to_string(in_size) + " -> " + std::to_string(out_size));
  constexpr double kSupport = 2.0;  // bicubic
  ResampleCoefficients c;
  c.in_size = in_size;
  c.out_size = out_size;
  // Pillow computes the box width (in1 - in0) in float, then widens it.
  const double scale = static_cast<double>(static_cast<float>(in_size) - 0.0f) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;  // no widening when upscaling
  const double support = kSupport * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0.0);
  c.fixed.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = 0.0 + (xx + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);  // C cast: truncation toward zero
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    const int n = xmax - xmin;
    double* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
    double ww = 0.0;
    for (int x = 0; x < n; ++x) {
      const double w = pil_bicubic_kernel((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < n; ++x)
      if (ww != 0.0) k[x] /= ww;
    c.xmin[xx] = xmin;
    c.count[xx] = n;
  }
  for (size_t i = 0; i < c.weights.size(); ++i) {
    const double w = c.weights[i];
    c.fixed[i] = w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kPilPrecisionBits))
                       : static_cast<int32_t>(0.5 + w * (1 << kPilPrecisionBits));
  }
  return c;
}

namespace {

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPilPrecisionBits;  // arithmetic shift, as in Pillow
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over source rows [row_offset, row_offset + out.height).
void resample_horizontal(ImageU8& out, const ImageU8& in, int row_offset, const ResampleCoefficients& c) {
  for (int yy = 0; yy < out.height; ++yy) {
    const uint8_t* src = in.at(0, yy + row_offset);
    uint8_t* dst = out.at(0, yy);
    for (int xx = 0; xx < out.width; ++xx) {
      const int32_t* k = &c.fixed[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* s = src + static_cast<size_t>(c.xmin[xx]) * 3;
      int32_t ss0 = 1 << (kPilPrecisionBits - 1), ss1 = ss0, ss2 = ss0;
      for (int x = 0; x < c.count[xx]; ++x) {
        ss0 += s[x * 3 + 0] * k[x];
        ss1 += s[x * 3 + 1] * k[x];
        ss2 += s[x * 3 + 2] * k[x];
      }
      dst[xx * 3 + 0] = clip8(ss0);
      dst[xx * 3 + 1] = clip8(ss1);
      dst[xx * 3 + 2] = clip8(ss2);
    }
  }
}

// Vertical pass; source row of output yy starts at c.xmin[yy] - row_offset.
void resample_vertical(ImageU8& out, const ImageU8& in, int row_offset, const ResampleCoefficients& c) {
  const size_t row_stride = static_cast<size_t>(in.width) * 3;
  for (int yy = 0; yy < out.height; ++yy) {
    const int32_t* k = &c.fixed[static_cast<size_t>(yy) * c.ksize];
    const uint8_t* src = in.at(0, c.xmin[yy] - row_offset);
    uint8_t* dst = out.at(0, yy);
    for (int i = 0; i < out.width * 3; ++i) {
      int32_t ss = 1 << (kPilPrecisionBits - 1);
      for (int y = 0; y < c.count[yy]; ++y) ss += src[y * row_stride + i] * k[y];
      dst[i] = clip8(ss);
    }
  }
}

}  // namespace

ImageU8 resize_bicubic_pil(const ImageU8& in, int out_w, int out_h) {
  if (out_w <= 0 || out_h <= 0 || in.width <= 0 || in.height <= 0)
    throw std::invalid_argument("resize_bicubic_pil: sizes must be positive, got " + std::to_string(in.width) +
                                "x" + std::to_string(in.height) + " -> " + std::to_string(out_w) + "x" +
                                std::to_string(out_h));
  const bool need_horizontal = out_w != in.width;
  const bool need_vertical = out_h != in.height;
  if (!need_horizontal && !need_vertical) return in;

  const ResampleCoefficients vert = pil_bicubic_coefficients(in.height, out_h);
  // Only the source rows some output row reads are resampled horizontally.
  const int ybox_first = vert.xmin[0];
  const int ybox_last = vert.xmin[out_h - 1] + vert.count[out_h - 1];

  if (!need_vertical) {
    ImageU8 out(out_w, in.height);
    resample_horizontal(out, in, 0, pil_bicubic_coefficients(in.width, out_w));
    return out;
  }
  ImageU8 out(out_w, out_h);
  if (!need_horizontal) {
    resample_vertical(out, in, 0, vert);
    return out;
  }
  ImageU8 temp(out_w, ybox_last - ybox_first);
  resample_horizontal(temp, in, ybox_first, pil_bicubic_coefficients(in.width, out_w));
  resample_vertical(out, temp, ybox_first, vert);
  return out;
}

}  // namespace p2dpo::image
