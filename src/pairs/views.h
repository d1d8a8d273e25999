#pragma once
// The image views P2-DPO builds from one sample (method spec §3–§4): the attention crop I_crop, the
// erased image I_deg and the noisy image I_noise. Every view is a pure function of the image, the
// box and a seed, so training rebuilds exactly the pixels the pair generator used.
#include <torch/types.h>

#include <cstdint>
#include <string>

#include "image/image.h"
#include "models/vlm.h"
#include "pairs/box.h"

namespace p2dpo::pairs {

// PIL's image.crop(box), with the box first clipped to the image (PIL would pad outside pixels with
// black; the adaptive crop never asks for them). An empty clipped box throws std::invalid_argument.
image::ImageU8 crop_view(const image::ImageU8& img, const PixelBox& box);

struct EraseConfig {
  std::string mode = "mean";  // "mean" | "blur" | "alpha"
  // blur: Gaussian sigma in pixels; <= 0 picks the clipped box's shorter side / 8, so the blur wipes
  // out detail at the scale of the box whatever its size.
  double blur_sigma = 0.0;
  double alpha = 0.5;  // alpha: weight of the mean colour, in [0, 1]
  // The released code draws the box with PIL's ImageDraw.rectangle, which paints both end points,
  // so it also erases column x2 and row y2 (where they lie inside the image). Off: exactly the box.
  bool pil_inclusive_end = false;
};

// Erase(I, bbox), the rest of the image untouched. The box is clipped to the image; an empty box or
// an unknown mode throws std::invalid_argument.
//  mean:  the box is filled with tuple(int(v) for v in mean over ALL pixels of the whole image),
//         i.e. the exact mean truncated per channel (P2-DPO HEAD run.py::_erase_region).
//  alpha: out = floor(alpha * m + (1 - alpha) * pixel + 0.5) inside the box, m the same truncated
//         mean colour, so alpha 1 equals the mean fill and alpha 0 the original.
//  blur:  a separable Gaussian (weights exp(-k^2 / 2 sigma^2), radius ceil(3 sigma), normalised;
//         neighbours read from the whole image with edge clamping, no rounding between the passes),
//         written back only inside the box, rounded half up. Not PIL's GaussianBlur (a box-blur
//         approximation); deterministic integer output.
image::ImageU8 erase_region(const image::ImageU8& img, const PixelBox& box, const EraseConfig& cfg);

// Clipped box area / image area (the share of the image an erasure covers). A non-positive image
// size throws std::invalid_argument.
double erased_share(const PixelBox& box, int image_w, int image_h);

// VCD's forward-diffusion noise (vcd_add_noise.py): betas = sigmoid(linspace(-6, 6, 1000)) *
// (5e-3 - 1e-5) + 1e-5, alpha_bar = cumprod(1 - betas), here in double (VCD: float32; the two agree
// to ~1e-6). alpha_bar at `step` in [0, 999] (else std::invalid_argument); step 600 gives
// sqrt(alpha_bar) = 0.7342 and sqrt(1 - alpha_bar) = 0.6789.
double diffusion_alpha_bar(int step);

// x_t = sqrt(ab_t) * x + sqrt(1 - ab_t) * eps on the normalised pixel tensor ([3, H, W]; any shape
// works, eps follows its row-major order, CHW for an image). eps comes from image::GaussianStream(seed)
// and the sum is taken in double on the host, so the result is identical on every machine. Returns
// float32 on the input's device.
torch::Tensor add_diffusion_noise(const torch::Tensor& normalized_pixels, int step, uint64_t seed);

struct NoiseConfig {
  std::string mode = "diffusion";  // "diffusion" (VCD, on the normalised tensor) | "pixel"
  int diffusion_step = 600;
  double pixel_sigma = 0.2;        // pixel: Gaussian sigma on the [0, 1] pixel scale (eval spec §3.1)
};

// The noisy view as the model sees it.
//  diffusion: prepare_image(img), then add_diffusion_noise on pixel_values (`view` keeps the clean
//             uint8 pixels: the noise exists only in tensor space);
//  pixel:     image::add_pixel_gaussian_noise(img, sigma, seed), then prepare_image.
// An unknown mode throws std::invalid_argument.
models::PreparedImage noisy_view(const models::VisionLanguageModel& model, const image::ImageU8& img,
                                 const NoiseConfig& cfg, uint64_t seed);

// The seed of one view of one sample: splitmix64(fnv1a64(sample_id + "/" + view) ^ splitmix64(run_seed)).
// Depends on nothing else (not on the order, shard or batch a sample is processed in), so training
// and a resumed or sharded run rebuild the same view.
uint64_t view_seed(uint64_t run_seed, const std::string& sample_id, const std::string& view);

}  // namespace p2dpo::pairs
