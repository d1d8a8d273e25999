#pragma once
// PNG encoding with every encoder choice pinned (one row filter, zlib level, strategy, window), so
// the bytes depend only on the pixels and the zlib implementation, not on libpng's adaptive-filter
// heuristics or defaults. The world writes thousands of images into a staging directory that is
// renamed into place whole, so it encodes in memory and skips image::write_png_atomic's per-file
// fsync (which dominated the run time).
#include <string>

#include "image/image.h"

namespace p2dpo::world {

// 8-bit RGB PNG bytes. Throws InputError(name_for_errors, ...) if libpng fails.
std::string encode_png(const image::ImageU8& img, const std::string& name_for_errors);

}  // namespace p2dpo::world
