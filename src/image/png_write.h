#pragma once
// Writing RGB images (debug dumps, test fixtures). Both write a temp file and rename it into place.
#include <string>

#include "image/image.h"

namespace p2dpo::image {

// 8-bit RGB PNG bytes, every encoder setting pinned (same pixels -> same bytes with one zlib).
// Throws InputError(name_for_errors, ...) for an empty or inconsistent image or a libpng failure.
// In memory, for callers that write many files and commit them together (the world generator).
std::string encode_png(const ImageU8& img, const std::string& name_for_errors);

// encode_png, then a temp file renamed into place. Throws InputError naming `path` on failure.
void write_png_atomic(const std::string& path, const ImageU8& img);

// Baseline JPEG, 4:2:0, libjpeg defaults otherwise; quality 1..100.
void write_jpeg_atomic(const std::string& path, const ImageU8& img, int quality);

}  // namespace p2dpo::image
