#pragma once
// HF CLIPImageProcessor (slow path, transformers 4.45) with its exact numerics (spec §C.1), plus the
// original LLaVA-1.5 expand2square padding (§C.3).
#include <array>
#include <string>
#include <vector>

#include "image/image.h"

namespace p2dpo::image {

struct ClipProcessorConfig {
  bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true, do_convert_rgb = true;
  // Resize target: shortest_edge > 0 means "short side to shortest_edge, long side int(S*long/short)";
  // otherwise resize_height x resize_width exactly (size {"height", "width"}).
  int shortest_edge = 224;
  int resize_height = 0, resize_width = 0;
  int crop_height = 224, crop_width = 224;
  double rescale_factor = 1.0 / 255.0;
  // Kept in double as the JSON gives them: mean_background needs int(m * 255) in double; the
  // normalisation casts to float32 as numpy does.
  double image_mean[3] = {0.48145466, 0.4578275, 0.40821073};
  double image_std[3] = {0.26862954, 0.26130258, 0.27577711};
  int resample = 3;            // PIL BICUBIC; the only one supported
  bool pad_to_square = false;  // original LLaVA image_aspect_ratio='pad' (not an HF key)
};

// Reads a preprocessor_config.json (HF CLIPImageProcessor keys; missing keys take the HF defaults).
// Malformed JSON, wrong types, non-positive sizes or resample != 3 -> InputError naming the file and key.
ClipProcessorConfig load_clip_processor_config(const std::string& path_to_preprocessor_config_json);

// LLaVA expand2square: a max(W,H) square filled with `background`, image pasted at
// ((side - W) / 2, (side - H) / 2); square images are returned unchanged.
ImageU8 expand_to_square(const ImageU8& img, std::array<uint8_t, 3> background);

// tuple(int(m * 255) for m in image_mean): (122, 116, 104) for the CLIP mean.
std::array<uint8_t, 3> mean_background(const ClipProcessorConfig& cfg);

// The resize output (height, width) HF computes: for shortest_edge S, new_long = int(S * long / short)
// (integer product, double division, truncation).
std::array<int, 2> clip_resize_output_hw(int height, int width, const ClipProcessorConfig& cfg);

// Centre-crop offsets: top = floor((H - crop_h) / 2), left likewise (negative when the image is smaller
// than the crop, where HF zero-pads).
std::array<int, 2> center_crop_top_left(int height, int width, int crop_height, int crop_width);

struct ProcessedImage {
  int height = 0, width = 0;
  std::vector<float> chw;  // [3, height, width] float32, channel order R, G, B
  ImageU8 view;            // uint8 image after pad/resize/crop (what was normalised)
};

// pad (if cfg.pad_to_square) -> resize -> centre crop -> rescale -> normalise -> CHW.
// An empty input, or a resize target beyond kMaxImageSide / kMaxImagePixels (an extreme aspect
// ratio), throws InputError(name_for_errors, ...).
ProcessedImage preprocess_clip(const ImageU8& img, const ClipProcessorConfig& cfg,
                               const std::string& name_for_errors = "image");

// Rescale + normalise + HWC->CHW of `view` into out[3 * H * W]:
// v = f32((f32(f64(u8) * rescale) - f32(mean_c)) / f32(std_c)), in float32 arithmetic.
void normalize_to_chw(const ImageU8& view, const ClipProcessorConfig& cfg, float* out);

}  // namespace p2dpo::image
