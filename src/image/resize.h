#pragma once
// Pillow's BICUBIC resize (src/libImaging/Resample.c, Pillow 9.4) for 8-bit RGB, bit-exact.
#include <cstdint>
#include <vector>

#include "image/image.h"

namespace p2dpo::image {

// Coefficients of one axis, as Pillow's precompute_coeffs + normalize_coeffs_8bpc produce them.
struct ResampleCoefficients {
  int in_size = 0, out_size = 0;
  int ksize = 0;                     // row stride of `weights` / `fixed`
  std::vector<int> xmin, count;      // first source index and number of taps per output index
  std::vector<double> weights;       // normalised weights, out_size * ksize (unused taps are 0)
  std::vector<int32_t> fixed;        // weights in 22-bit fixed point, rounded half away from zero
};

inline constexpr int kPilPrecisionBits = 32 - 8 - 2;  // 22

// The BICUBIC (a = -0.5) kernel, evaluated exactly as Pillow writes it.
double pil_bicubic_kernel(double x);

ResampleCoefficients pil_bicubic_coefficients(int in_size, int out_size);

// Image.resize((out_w, out_h), Image.BICUBIC) on an RGB image: horizontal pass first (only over the
// source rows the vertical pass needs), uint8 rounding/clipping between the passes; a pass whose
// size does not change is skipped. Throws std::invalid_argument for non-positive sizes.
ImageU8 resize_bicubic_pil(const ImageU8& in, int out_w, int out_h);

}  // namespace p2dpo::image
