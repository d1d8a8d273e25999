// libFuzzer target: PNG/JPEG decoding (with EXIF orientation) must either return a consistent image
// or throw InputError; never crash, leak or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "image/decode.h"
#include "io/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  p2dpo::image::DecodeOptions opts;
  opts.apply_exif_orientation = size > 0 && (data[size - 1] & 1);  // exercise both paths
  opts.max_pixels = int64_t{1} << 22;  // keep forged headers from hitting the fuzzer's memory limit
  try {
    const auto img = p2dpo::image::decode_image_memory(data, size, "fuzz-input", opts);
    if (img.width <= 0 || img.height <= 0 || img.rgb.size() != size_t(img.width) * img.height * 3) std::abort();
  } catch (const p2dpo::InputError&) {
  }
  return 0;
}
