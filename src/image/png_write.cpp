#include "image/png_write.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <zlib.h>

#include "io/atomic_file.h"
#include "io/errors.h"

namespace p2dpo::image {
namespace {

constexpr size_t kErrorLength = 256;

// As in decode.cpp: C++ objects live in the caller so a longjmp out of libpng/libjpeg skips no destructor.
struct PngSink {
  std::string* bytes;
  char error[kErrorLength];
};

void png_write_to_string(png_structp png, png_bytep data, size_t length) {
  auto* sink = static_cast<PngSink*>(png_get_io_ptr(png));
  bool appended = true;
  try {
    sink->bytes->append(reinterpret_cast<const char*>(data), length);
  } catch (...) {
    appended = false;  // longjmp only after the handler has finished
  }
  if (!appended) png_error(png, "out of memory");
}
void png_flush_nothing(png_structp) {}

void png_on_write_error(png_structp png, png_const_charp message) {
  auto* sink = static_cast<PngSink*>(png_get_error_ptr(png));
  std::snprintf(sink->error, kErrorLength, "writing PNG: %s", message);
  png_longjmp(png, 1);
}

bool encode_png_guarded(const ImageU8& img, PngSink& sink) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_on_write_error, nullptr);
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
  png_set_write_fn(png, &sink, png_write_to_string, png_flush_nothing);
  // Every encoder choice pinned, so the bytes depend only on the pixels and the zlib implementation
  // (not on libpng's adaptive-filter heuristic): the world's files are byte-identical across runs.
  // Paeth suits smooth gradients and flat shapes.
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

struct JpegSink {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char error[kErrorLength];
};

[[noreturn]] void jpeg_on_write_error(j_common_ptr cinfo) {
  auto* sink = reinterpret_cast<JpegSink*>(cinfo->err);
  char message[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, message);
  std::snprintf(sink->error, kErrorLength, "writing JPEG: %s", message);
  std::longjmp(sink->jump, 1);
}

// Appends compressed bytes to a caller-owned string (jpeg_mem_dest's buffer handling makes the
// error path hard to free correctly).
struct JpegStringDestination {
  jpeg_destination_mgr pub;
  std::string* bytes;
  JOCTET buffer[16384];
};

bool append_chunk(JpegStringDestination* dest, size_t length) {
  try {
    dest->bytes->append(reinterpret_cast<const char*>(dest->buffer), length);
    return true;
  } catch (...) {
    return false;
  }
}

void jpeg_dest_init(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<JpegStringDestination*>(cinfo->dest);
  dest->pub.next_output_byte = dest->buffer;
  dest->pub.free_in_buffer = sizeof dest->buffer;
}

boolean jpeg_dest_empty(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<JpegStringDestination*>(cinfo->dest);
  if (!append_chunk(dest, sizeof dest->buffer)) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
  jpeg_dest_init(cinfo);
  return TRUE;
}

void jpeg_dest_term(j_compress_ptr cinfo) {
  auto* dest = reinterpret_cast<JpegStringDestination*>(cinfo->dest);
  if (!append_chunk(dest, sizeof dest->buffer - dest->pub.free_in_buffer)) ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
}

bool encode_jpeg_guarded(const ImageU8& img, int quality, JpegSink& sink, JpegStringDestination& dest) {
  jpeg_compress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&sink.pub);
  sink.pub.error_exit = jpeg_on_write_error;
  if (setjmp(sink.jump)) {
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  dest.pub.init_destination = jpeg_dest_init;
  dest.pub.empty_output_buffer = jpeg_dest_empty;
  dest.pub.term_destination = jpeg_dest_term;
  cinfo.dest = &dest.pub;
  cinfo.image_width = static_cast<JDIMENSION>(img.width);
  cinfo.image_height = static_cast<JDIMENSION>(img.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(img.at(0, static_cast<int>(cinfo.next_scanline)));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

void check_writable(const std::string& path, const ImageU8& img) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3)
    throw InputError(path, "cannot write an empty or inconsistent image (" + std::to_string(img.width) + "x" +
                               std::to_string(img.height) + ", " + std::to_string(img.rgb.size()) + " bytes)");
}

}  // namespace

std::string encode_png(const ImageU8& img, const std::string& name_for_errors) {
  check_writable(name_for_errors, img);
  std::string bytes;
  PngSink sink{&bytes, {0}};
  if (!encode_png_guarded(img, sink))
    throw InputError(name_for_errors, sink.error[0] ? sink.error : "writing PNG failed");
  return bytes;
}

void write_png_atomic(const std::string& path, const ImageU8& img) {
  io::write_file_atomic(path, encode_png(img, path));
}

void write_jpeg_atomic(const std::string& path, const ImageU8& img, int quality) {
  check_writable(path, img);
  if (quality < 1 || quality > 100) throw InputError(path, "JPEG quality must be 1..100, got " + std::to_string(quality));
  JpegSink sink;
  sink.error[0] = 0;
  std::string bytes;
  JpegStringDestination dest;
  dest.bytes = &bytes;
  if (!encode_jpeg_guarded(img, quality, sink, dest)) throw InputError(path, sink.error[0] ? sink.error : "writing JPEG failed");
  io::write_file_atomic(path, bytes);
}

}  // namespace p2dpo::image
