#pragma once
// Decoding PNG and JPEG files to RGB with the exact pixels Pillow 9.4 gives for
// Image.open(path).convert("RGB") (what HF processors and the original LLaVA code see).
#include <cstddef>
#include <cstdint>
#include <string>

#include "image/image.h"

namespace p2dpo::image {

// Largest accepted side and pixel count; beyond this the input is rejected as absurd.
inline constexpr int kMaxImageSide = 1 << 16;
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

struct DecodeOptions {
  // false = what PIL Image.open + HF do (no rotation). true = apply the EXIF Orientation tag (1..8)
  // like PIL's ImageOps.exif_transpose (JPEG APP1 "Exif", PNG eXIf chunk).
  bool apply_exif_orientation = false;
  // Images with more pixels are rejected before any pixel buffer is allocated (a fuzzer or a
  // server may want less than the default).
  int64_t max_pixels = kMaxImagePixels;
};

// Format is detected from the magic bytes (PNG or JPEG); anything else, missing/empty files,
// truncated or corrupt data and absurd sizes throw InputError naming the file.
//
// Colour conversion follows PIL's convert("RGB"):
//   grey 1/2/4/8 bit  -> replicated (low depths scaled to 0..255 as PIL's unpackers do)
//   grey 16 bit       -> PIL opens it as mode "I"; convert clips: min(v, 255) (NOT v >> 8)
//   grey+alpha, RGBA  -> alpha dropped, no compositing (16-bit: high byte, as PIL's ;16B unpackers)
//   RGB 16 bit        -> high byte (v >> 8)
//   palette           -> palette lookup; tRNS ignored (also for grey/RGB)
//   JPEG CMYK/YCCK    -> PIL's inverted Adobe CMYK, then PIL's cmyk2rgb (MULDIV255)
// JPEG uses libjpeg defaults (ISLOW IDCT, fancy upsampling), matching Pillow's decoder.
ImageU8 decode_image_file(const std::string& path, const DecodeOptions& opts = {});
ImageU8 decode_image_memory(const uint8_t* data, size_t size, const std::string& name_for_errors,
                            const DecodeOptions& opts = {});

// Exposed for tests: the EXIF Orientation (1..8) found in a TIFF structure ("II"/"MM" header, IFD0),
// or 0 if there is none or the structure is malformed. Never reads outside [tiff, tiff + size).
int exif_orientation_from_tiff(const uint8_t* tiff, size_t size);

// Applies orientation 2..8 like ImageOps.exif_transpose (1 or unknown values: unchanged copy).
ImageU8 apply_orientation(const ImageU8& img, int orientation);

}  // namespace p2dpo::image
