#include "image/clip_processor.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "image/decode.h"
#include "image/resize.h"
#include "io/errors.h"
#include "io/json_io.h"

namespace p2dpo::image {
namespace {

using nlohmann::json;

bool read_bool(const json& j, const std::string& key, bool fallback, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) throw InputError(path, "field '" + key + "' must be a boolean");
  return j[key].get<bool>();
}

int read_positive_int(const json& j, const std::string& field, const std::string& path) {
  if (!j.is_number_integer() || j.get<int64_t>() <= 0 || j.get<int64_t>() > (1 << 16))
    throw InputError(path, "field '" + field + "' must be a positive integer (at most 65536)");
  return static_cast<int>(j.get<int64_t>());
}

// HF get_size_dict: an int, a [height, width] list, or a dict with height/width (or shortest_edge).
// Returns {height, width}, or {S, 0} for shortest_edge S when allowed.
std::array<int, 2> read_size(const json& j, const std::string& key, bool allow_shortest_edge, bool int_is_square,
                             const std::string& path) {
  if (j.is_number_integer()) {
    const int s = read_positive_int(j, key, path);
    return int_is_square ? std::array<int, 2>{s, s} : std::array<int, 2>{s, 0};
  }
  if (j.is_array() && j.size() == 2)
    return {read_positive_int(j[0], key + "[0]", path), read_positive_int(j[1], key + "[1]", path)};
  if (j.is_object()) {
    if (allow_shortest_edge && j.contains("shortest_edge"))
      return {read_positive_int(j["shortest_edge"], key + ".shortest_edge", path), 0};
    if (j.contains("height") && j.contains("width"))
      return {read_positive_int(j["height"], key + ".height", path),
              read_positive_int(j["width"], key + ".width", path)};
  }
  throw InputError(path, "field '" + key + "' must be an integer, [height, width] or {" +
                             (allow_shortest_edge ? std::string("\"shortest_edge\"} or {") : std::string()) +
                             "\"height\", \"width\"}");
}

void read_triple(const json& j, const std::string& key, double* out, const std::string& path) {
  if (!j.contains(key) || j[key].is_null()) return;
  const json& v = j[key];
  if (v.is_number()) {
    out[0] = out[1] = out[2] = v.get<double>();
    return;
  }
  if (!v.is_array() || v.size() != 3)
    throw InputError(path, "field '" + key + "' must be a list of 3 numbers (one per RGB channel)");
  for (int c = 0; c < 3; ++c) {
    if (!v[c].is_number()) throw InputError(path, "field '" + key + "' must be a list of 3 numbers");
    out[c] = v[c].get<double>();
  }
}

}  // namespace

ClipProcessorConfig load_clip_processor_config(const std::string& path) {
  const json j = io::read_json_file(path);
  if (!j.is_object()) throw InputError(path, "expected a JSON object (preprocessor_config.json)");
  ClipProcessorConfig cfg;
  cfg.do_resize = read_bool(j, "do_resize", cfg.do_resize, path);
  cfg.do_center_crop = read_bool(j, "do_center_crop", cfg.do_center_crop, path);
  cfg.do_rescale = read_bool(j, "do_rescale", cfg.do_rescale, path);
  cfg.do_normalize = read_bool(j, "do_normalize", cfg.do_normalize, path);
  cfg.do_convert_rgb = read_bool(j, "do_convert_rgb", cfg.do_convert_rgb, path);
  if (j.contains("size") && !j["size"].is_null()) {
    const auto size = read_size(j["size"], "size", /*allow_shortest_edge=*/true, /*int_is_square=*/false, path);
    if (size[1] == 0) {
      cfg.shortest_edge = size[0];
    } else {
      cfg.shortest_edge = 0;
      cfg.resize_height = size[0];
      cfg.resize_width = size[1];
    }
  }
  if (j.contains("crop_size") && !j["crop_size"].is_null()) {
    const auto crop = read_size(j["crop_size"], "crop_size", false, /*int_is_square=*/true, path);
    cfg.crop_height = crop[0];
    cfg.crop_width = crop[1];
  }
  if (j.contains("rescale_factor") && !j["rescale_factor"].is_null()) {
    if (!j["rescale_factor"].is_number()) throw InputError(path, "field 'rescale_factor' must be a number");
    cfg.rescale_factor = j["rescale_factor"].get<double>();
  }
  read_triple(j, "image_mean", cfg.image_mean, path);
  read_triple(j, "image_std", cfg.image_std, path);
  for (double s : cfg.image_std)
    if (s == 0.0) throw InputError(path, "field 'image_std' must not contain 0");
  if (j.contains("resample") && !j["resample"].is_null()) {
    if (!j["resample"].is_number_integer()) throw InputError(path, "field 'resample' must be an integer");
    cfg.resample = j["resample"].get<int>();
  }
  if (cfg.resample != 3)
    throw InputError(path, "field 'resample' is " + std::to_string(cfg.resample) +
                               "; only 3 (PIL BICUBIC) is supported");
  return cfg;
}

ImageU8 expand_to_square(const ImageU8& img, std::array<uint8_t, 3> background) {
  if (img.width == img.height) return img;
  const int side = std::max(img.width, img.height);
  ImageU8 out(side, side);
  for (size_t i = 0; i < out.rgb.size(); i += 3) std::memcpy(&out.rgb[i], background.data(), 3);
  const int x0 = (side - img.width) / 2, y0 = (side - img.height) / 2;
  for (int y = 0; y < img.height; ++y) std::memcpy(out.at(x0, y0 + y), img.at(0, y), static_cast<size_t>(img.width) * 3);
  return out;
}

std::array<uint8_t, 3> mean_background(const ClipProcessorConfig& cfg) {
  std::array<uint8_t, 3> bg{};
  for (int c = 0; c < 3; ++c) {
    const double v = cfg.image_mean[c] * 255;  // Python int() truncates
    bg[c] = static_cast<uint8_t>(v <= 0 ? 0 : (v >= 255 ? 255 : static_cast<int>(v)));
  }
  return bg;
}

std::array<int, 2> clip_resize_output_hw(int height, int width, const ClipProcessorConfig& cfg) {
  if (cfg.shortest_edge <= 0) return {cfg.resize_height, cfg.resize_width};
  const int64_t s = cfg.shortest_edge;
  const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
  double new_long_exact = static_cast<double>(s * long_side) / static_cast<double>(short_side);
  if (new_long_exact > 2147483647.0) new_long_exact = 2147483647.0;  // keep the cast defined; rejected later
  const int new_long = static_cast<int>(new_long_exact);
  if (width <= height) return {new_long, static_cast<int>(s)};
  return {static_cast<int>(s), new_long};
}

std::array<int, 2> center_crop_top_left(int height, int width, int crop_height, int crop_width) {
  auto floor_half = [](int d) { return d >= 0 ? d / 2 : -((-d + 1) / 2); };
  return {floor_half(height - crop_height), floor_half(width - crop_width)};
}

void normalize_to_chw(const ImageU8& view, const ClipProcessorConfig& cfg, float* out) {
  const size_t plane = static_cast<size_t>(view.width) * view.height;
  for (int c = 0; c < 3; ++c) {
    // One of 256 values per channel: build the table once with the exact numpy formula.
    float table[256];
    const float mean = static_cast<float>(cfg.image_mean[c]);
    const float std = static_cast<float>(cfg.image_std[c]);
    for (int u = 0; u < 256; ++u) {
      float x = cfg.do_rescale ? static_cast<float>(static_cast<double>(u) * cfg.rescale_factor) : static_cast<float>(u);
      if (cfg.do_normalize) x = (x - mean) / std;
      table[u] = x;
    }
    float* dst = out + plane * c;
    for (size_t i = 0; i < plane; ++i) dst[i] = table[view.rgb[i * 3 + c]];
  }
}

ProcessedImage preprocess_clip(const ImageU8& img, const ClipProcessorConfig& cfg, const std::string& name) {
  if (img.width <= 0 || img.height <= 0) throw InputError(name, "empty image");
  ImageU8 view = cfg.pad_to_square ? expand_to_square(img, mean_background(cfg)) : img;
  if (cfg.do_resize) {
    const auto hw = clip_resize_output_hw(view.height, view.width, cfg);
    if (hw[0] > kMaxImageSide || hw[1] > kMaxImageSide || int64_t{hw[0]} * hw[1] > kMaxImagePixels)
      throw InputError(name, "aspect ratio too extreme: " + std::to_string(view.width) + "x" +
                                 std::to_string(view.height) + " would be resized to " + std::to_string(hw[1]) +
                                 "x" + std::to_string(hw[0]));
    view = resize_bicubic_pil(view, hw[1], hw[0]);
  }
  if (cfg.do_center_crop && (view.height != cfg.crop_height || view.width != cfg.crop_width)) {
    // HF zero-pads when the image is smaller than the crop; source = output + floor offset covers both.
    const auto tl = center_crop_top_left(view.height, view.width, cfg.crop_height, cfg.crop_width);
    ImageU8 cropped(cfg.crop_width, cfg.crop_height);
    for (int y = 0; y < cropped.height; ++y) {
      const int sy = y + tl[0];
      if (sy < 0 || sy >= view.height) continue;
      for (int x = 0; x < cropped.width; ++x) {
        const int sx = x + tl[1];
        if (sx >= 0 && sx < view.width) std::memcpy(cropped.at(x, y), view.at(sx, sy), 3);
      }
    }
    view = std::move(cropped);
  }
  ProcessedImage out;
  out.height = view.height;
  out.width = view.width;
  out.chw.resize(static_cast<size_t>(3) * view.height * view.width);
  normalize_to_chw(view, cfg, out.chw.data());
  out.view = std::move(view);
  return out;
}

}  // namespace p2dpo::image
