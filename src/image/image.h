#pragma once
// An 8-bit RGB image as PIL / numpy hold it after convert("RGB"): HWC, row-major, 3 channels.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace p2dpo::image {

struct ImageU8 {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // HWC, 3 channels, row-major; size == width * height * 3

  ImageU8() = default;
  ImageU8(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3, 0) {}

  // Pointer to the 3 channel values of pixel (x, y); no bounds check.
  uint8_t* at(int x, int y) { return rgb.data() + (static_cast<size_t>(y) * width + x) * 3; }
  const uint8_t* at(int x, int y) const { return rgb.data() + (static_cast<size_t>(y) * width + x) * 3; }
  bool empty() const { return width == 0 || height == 0; }
};

}  // namespace p2dpo::image
