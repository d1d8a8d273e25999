#include "world/png_encode.h"

#include <csetjmp>
#include <cstdio>
#include <string>

#include <png.h>
#include <zlib.h>

#include "io/errors.h"

namespace p2dpo::world {
namespace {

constexpr size_t kErrorLength = 256;

// C++ objects live in the caller, so a longjmp out of libpng skips no destructor.
struct Sink {
  std::string* bytes;
  char error[kErrorLength];
};

void append_bytes(png_structp png, png_bytep data, size_t length) {
  auto* sink = static_cast<Sink*>(png_get_io_ptr(png));
  bool appended = true;
  try {
    sink->bytes->append(reinterpret_cast<const char*>(data), length);
  } catch (...) {
    appended = false;  // longjmp only after the handler has finished
  }
  if (!appended) png_error(png, "out of memory");
}
void flush_nothing(png_structp) {}

void on_error(png_structp png, png_const_charp message) {
  auto* sink = static_cast<Sink*>(png_get_error_ptr(png));
  std::snprintf(sink->error, kErrorLength, "writing PNG: %s", message);
  png_longjmp(png, 1);
}

bool encode_guarded(const image::ImageU8& img, Sink& sink) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, on_error, nullptr);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, &sink, append_bytes, flush_nothing);
  // Paeth suits smooth gradients and flat shapes; a single filter avoids libpng's heuristic.
  png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_PAETH);
  png_set_compression_level(png, 6);
  png_set_compression_mem_level(png, 8);
  png_set_compression_strategy(png, Z_FILTERED);
  png_set_compression_window_bits(png, 15);
  png_set_IHDR(png, info, static_cast<png_uint_32>(img.width), static_cast<png_uint_32>(img.height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < img.height; ++y) png_write_row(png, const_cast<uint8_t*>(img.at(0, y)));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

}  // namespace

std::string encode_png(const image::ImageU8& img, const std::string& name_for_errors) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3)
    throw InputError(name_for_errors, "cannot encode an empty or inconsistent image");
  std::string bytes;
  Sink sink{&bytes, {0}};
  if (!encode_guarded(img, sink)) throw InputError(name_for_errors, sink.error[0] ? sink.error : "writing PNG failed");
  return bytes;
}

}  // namespace p2dpo::world
