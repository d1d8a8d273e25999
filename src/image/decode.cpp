#include "image/decode.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "io/atomic_file.h"
#include "io/errors.h"

// libpng and libjpeg report errors by longjmp. Each setjmp below sits in a function whose own locals
// are trivially destructible; every C++ object it touches lives in the caller (passed by reference),
// so a longjmp never skips a destructor, and the library structs are destroyed on both paths.

namespace p2dpo::image {
namespace {

constexpr size_t kErrorLength = 256;

struct Limits {
  int64_t max_pixels;
};

// Grows `v` without letting std::bad_alloc unwind through a setjmp frame (that would leak the
// library struct); false on failure.
bool grow(std::vector<uint8_t>& v, size_t size, char* error) noexcept {
  try {
    v.resize(size);
    return true;
  } catch (...) {
    std::snprintf(error, kErrorLength, "out of memory (%zu bytes)", size);
    return false;
  }
}

bool dimensions_ok(uint64_t width, uint64_t height, const Limits& limits, char* error) {
  if (width == 0 || height == 0) {
    std::snprintf(error, kErrorLength, "image has zero width or height (%llux%llu)",
                  static_cast<unsigned long long>(width), static_cast<unsigned long long>(height));
    return false;
  }
  if (width > static_cast<uint64_t>(kMaxImageSide) || height > static_cast<uint64_t>(kMaxImageSide) ||
      width * height > static_cast<uint64_t>(limits.max_pixels)) {
    std::snprintf(error, kErrorLength, "image dimensions %llux%llu are too large (limit %d per side, %lld pixels)",
                  static_cast<unsigned long long>(width), static_cast<unsigned long long>(height), kMaxImageSide,
                  static_cast<long long>(limits.max_pixels));
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------- EXIF

uint32_t read_u16(const uint8_t* p, bool big_endian) {
  return big_endian ? (uint32_t{p[0]} << 8) | p[1] : (uint32_t{p[1]} << 8) | p[0];
}
uint32_t read_u32(const uint8_t* p, bool big_endian) {
  return big_endian ? (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3]
                    : (uint32_t{p[3]} << 24) | (uint32_t{p[2]} << 16) | (uint32_t{p[1]} << 8) | p[0];
}

// PIL hands Exif.load() the APP1 payload; it strips a leading "Exif\0\0" and parses the rest as TIFF.
int exif_orientation_from_app1(const uint8_t* data, size_t size) {
  static const uint8_t kPrefix[6] = {'E', 'x', 'i', 'f', 0, 0};
  if (size >= 6 && std::memcmp(data, kPrefix, 6) == 0) return exif_orientation_from_tiff(data + 6, size - 6);
  return exif_orientation_from_tiff(data, size);
}

// ----------------------------------------------------------------------------------------------- PNG

struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t pos;
  char error[kErrorLength];
};

// What the setjmp-guarded PNG reader hands back (owned by the caller so a longjmp leaks nothing).
struct PngDecoded {
  std::vector<uint8_t> samples;  // rows after libpng's transforms, channels * bytes_per_sample each
  std::vector<png_bytep> row_pointers;
  std::vector<uint8_t> exif;
  uint8_t palette[256 * 3];
  int width = 0, height = 0, channels = 0, bit_depth = 0, color_type = 0;
};

void png_read_from_memory(png_structp png, png_bytep out, size_t length) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (length > source->size - source->pos) png_error(png, "truncated PNG data");
  std::memcpy(out, source->data + source->pos, length);
  source->pos += length;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* source = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(source->error, kErrorLength, "corrupt PNG: %s", message);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // PIL ignores ancillary-chunk problems too

// Returns false with source.error set. Rows are read one at a time (non-interlaced) so that memory
// grows with the data actually present, not with what a (possibly forged) header claims.
bool png_decode_guarded(PngSource& source, PngDecoded& out, const Limits& limits, bool want_exif) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_on_error, png_on_warning);
  if (png == nullptr) {
    std::snprintf(source.error, kErrorLength, "out of memory creating the PNG reader");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(source.error, kErrorLength, "out of memory creating the PNG reader");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &source, png_read_from_memory);
  png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);  // our own limits below, with a clearer message
  png_read_info(png, info);

  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  if (!dimensions_ok(width, height, limits, source.error)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    // PIL's palette starts as a grey ramp and PLTE overwrites its first entries, so indices past
    // the end of PLTE read as (i, i, i); we do the lookup ourselves to reproduce that.
    for (int i = 0; i < 256; ++i) out.palette[i * 3] = out.palette[i * 3 + 1] = out.palette[i * 3 + 2] = uint8_t(i);
    png_colorp plte = nullptr;
    int plte_size = 0;
    if (png_get_PLTE(png, info, &plte, &plte_size) != 0) {
      for (int i = 0; i < plte_size && i < 256; ++i) {
        out.palette[i * 3] = plte[i].red;
        out.palette[i * 3 + 1] = plte[i].green;
        out.palette[i * 3 + 2] = plte[i].blue;
      }
    }
    png_set_packing(png);  // one index per byte
  } else if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) {
    png_set_expand_gray_1_2_4_to_8(png);  // scales like PIL's "1", "L;2", "L;4" unpackers
  }
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.channels = png_get_channels(png, info);
  out.bit_depth = png_get_bit_depth(png, info);
  out.color_type = color_type;
  const size_t rowbytes = png_get_rowbytes(png, info);
  if (rowbytes != static_cast<size_t>(width) * out.channels * (out.bit_depth / 8) || out.bit_depth < 8) {
    std::snprintf(source.error, kErrorLength, "unsupported PNG layout (bit depth %d, colour type %d)", bit_depth,
                  color_type);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }

  if (want_exif) {
    png_uint_32 exif_size = 0;
    png_bytep exif = nullptr;
    if (png_get_eXIf_1(png, info, &exif_size, &exif) != 0 && exif != nullptr)
      out.exif.assign(exif, exif + exif_size);
  }

  if (passes > 1) {
    // Adam7 combines every pass into full rows, so the whole image must be allocated up front.
    if (!grow(out.samples, rowbytes * height, source.error)) {
      png_destroy_read_struct(&png, &info, nullptr);
      return false;
    }
    out.row_pointers.assign(height, nullptr);  // small next to `samples`
    for (png_uint_32 y = 0; y < height; ++y) out.row_pointers[y] = out.samples.data() + rowbytes * y;
    png_read_image(png, out.row_pointers.data());
  } else {
    for (png_uint_32 y = 0; y < height; ++y) {
      if (!grow(out.samples, rowbytes * (y + 1), source.error)) {
        png_destroy_read_struct(&png, &info, nullptr);
        return false;
      }
      png_read_row(png, out.samples.data() + rowbytes * y, nullptr);
    }
  }
  // Like PIL, chunks after the image data are not read (a missing IEND is not an error).
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

ImageU8 png_to_rgb(const PngDecoded& png) {
  ImageU8 img(png.width, png.height);
  const size_t count = static_cast<size_t>(png.width) * png.height;
  const uint8_t* in = png.samples.data();
  uint8_t* out = img.rgb.data();
  const int bytes = png.bit_depth / 8;  // 1 or 2 (big-endian)
  const size_t stride = static_cast<size_t>(png.channels) * bytes;
  if (png.color_type == PNG_COLOR_TYPE_PALETTE) {
    for (size_t i = 0; i < count; ++i) std::memcpy(out + i * 3, png.palette + in[i] * 3, 3);
  } else if (png.channels <= 2) {
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* s = in + i * stride;
      uint8_t v = s[0];
      // 16-bit grey is PIL mode "I"; convert("RGB") clips it to 255. Grey+alpha 16 keeps the high byte.
      if (bytes == 2 && png.channels == 1) v = s[0] != 0 ? 255 : s[1];
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = v;
    }
  } else {
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* s = in + i * stride;
      for (int c = 0; c < 3; ++c) out[i * 3 + c] = s[c * bytes];  // 16-bit: the high (first) byte
    }
  }
  return img;
}

ImageU8 decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opts,
                   int* orientation) {
  PngSource source{data, size, 0, {0}};
  PngDecoded decoded;
  if (!png_decode_guarded(source, decoded, Limits{opts.max_pixels}, opts.apply_exif_orientation))
    throw InputError(name, source.error);
  if (!decoded.exif.empty())
    *orientation = exif_orientation_from_app1(decoded.exif.data(), decoded.exif.size());
  return png_to_rgb(decoded);
}

// ---------------------------------------------------------------------------------------------- JPEG

struct JpegErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char error[kErrorLength];
};

[[noreturn]] void jpeg_on_error(j_common_ptr cinfo) {
  auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  char message[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, message);
  std::snprintf(manager->error, kErrorLength, "corrupt JPEG: %s", message);
  std::longjmp(manager->jump, 1);
}

void jpeg_on_message(j_common_ptr cinfo, int msg_level) {
  auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  // libjpeg pads a file that ends early with a fake EOI and only warns; Pillow raises "image file
  // is truncated" when its decoder runs out of data, so we treat it as an error.
  if (msg_level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    std::snprintf(manager->error, kErrorLength, "truncated JPEG data");
    std::longjmp(manager->jump, 1);
  }
  // Other warnings (corrupt-but-decodable data) are ignored, as Pillow does.
}

void jpeg_on_progress(j_common_ptr cinfo) {
  // A legitimate progressive JPEG has a handful of scans; thousands are a decompression bomb.
  constexpr int kMaxScans = 1000;
  auto* dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (cinfo->is_decompressor && dinfo->input_scan_number > kMaxScans) {
    auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
    std::snprintf(manager->error, kErrorLength, "JPEG has more than %d scans", kMaxScans);
    std::longjmp(manager->jump, 1);
  }
}

struct JpegDecoded {
  std::vector<uint8_t> samples;  // output rows, components bytes per pixel
  std::vector<uint8_t> exif;
  int width = 0, height = 0, components = 0;
};

bool jpeg_decode_guarded(const uint8_t* data, size_t size, JpegDecoded& out, JpegErrorManager& errors,
                         const Limits& limits, bool want_exif) {
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);  // so jpeg_destroy_decompress is safe even if create failed
  jpeg_progress_mgr progress;
  cinfo.err = jpeg_std_error(&errors.pub);
  errors.pub.error_exit = jpeg_on_error;
  errors.pub.emit_message = jpeg_on_message;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  progress.progress_monitor = jpeg_on_progress;
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  if (want_exif) jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  if (!dimensions_ok(cinfo.image_width, cinfo.image_height, limits, errors.error)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // Pillow's modes: 1 component L, 3 RGB, 4 CMYK (read as inverted Adobe CMYK); others unsupported.
  switch (cinfo.num_components) {
    case 1: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo.out_color_space = JCS_RGB; break;
    case 4: cinfo.out_color_space = JCS_CMYK; break;
    default:
      std::snprintf(errors.error, kErrorLength, "JPEG with %d components is not supported", cinfo.num_components);
      jpeg_destroy_decompress(&cinfo);
      return false;
  }
  if (want_exif) {
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
      // Pillow keeps the first APP1 whose payload starts with "Exif".
      if (m->marker == JPEG_APP0 + 1 && m->data_length >= 4 && std::memcmp(m->data, "Exif", 4) == 0) {
        out.exif.assign(m->data, m->data + m->data_length);
        break;
      }
    }
  }
  jpeg_start_decompress(&cinfo);
  out.width = static_cast<int>(cinfo.output_width);
  out.height = static_cast<int>(cinfo.output_height);
  out.components = cinfo.output_components;
  const size_t rowbytes = static_cast<size_t>(out.width) * out.components;
  while (cinfo.output_scanline < cinfo.output_height) {
    const size_t y = cinfo.output_scanline;
    if (!grow(out.samples, rowbytes * (y + 1), errors.error)) {  // grows with the data actually decoded
      jpeg_destroy_decompress(&cinfo);
      return false;
    }
    JSAMPROW row = out.samples.data() + rowbytes * y;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // Trailing garbage or a missing EOI after complete image data is accepted, as by Pillow.
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// PIL's MULDIV255: a rounded a*b/255.
inline int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

ImageU8 jpeg_to_rgb(const JpegDecoded& jpeg) {
  ImageU8 img(jpeg.width, jpeg.height);
  const size_t count = static_cast<size_t>(jpeg.width) * jpeg.height;
  const uint8_t* in = jpeg.samples.data();
  uint8_t* out = img.rgb.data();
  if (jpeg.components == 3) {
    std::memcpy(out, in, count * 3);
  } else if (jpeg.components == 1) {
    for (size_t i = 0; i < count; ++i) out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = in[i];
  } else {
    // Pillow reads 4-component JPEGs as "CMYK;I" (Adobe stores CMYK inverted), then cmyk2rgb.
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* s = in + i * 4;
      const int k = 255 - s[3];
      const int nk = 255 - k;
      for (int c = 0; c < 3; ++c) {
        const int v = nk - muldiv255(255 - s[c], nk);
        out[i * 3 + c] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
      }
    }
  }
  return img;
}

ImageU8 decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opts,
                    int* orientation) {
  JpegErrorManager errors;
  errors.error[0] = 0;
  JpegDecoded decoded;
  if (!jpeg_decode_guarded(data, size, decoded, errors, Limits{opts.max_pixels}, opts.apply_exif_orientation))
    throw InputError(name, errors.error);
  if (!decoded.exif.empty())
    *orientation = exif_orientation_from_app1(decoded.exif.data(), decoded.exif.size());
  return jpeg_to_rgb(decoded);
}

}  // namespace

int exif_orientation_from_tiff(const uint8_t* tiff, size_t size) {
  constexpr uint32_t kOrientationTag = 0x0112;
  constexpr uint32_t kTypeShort = 3, kTypeLong = 4;
  if (size < 8) return 0;
  bool big_endian;
  if (tiff[0] == 'I' && tiff[1] == 'I') big_endian = false;
  else if (tiff[0] == 'M' && tiff[1] == 'M') big_endian = true;
  else return 0;
  if (read_u16(tiff + 2, big_endian) != 42) return 0;
  const uint32_t ifd = read_u32(tiff + 4, big_endian);
  if (ifd > size || size - ifd < 2) return 0;
  const uint32_t entries = read_u16(tiff + ifd, big_endian);
  int orientation = 0;
  // Like PIL, entries are read until the data runs out; a later duplicate tag wins.
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t at = size_t{ifd} + 2 + size_t{i} * 12;
    if (at + 12 > size) break;
    const uint8_t* e = tiff + at;
    if (read_u16(e, big_endian) != kOrientationTag) continue;
    const uint32_t type = read_u16(e + 2, big_endian);
    const uint32_t count = read_u32(e + 4, big_endian);
    uint32_t value = 0;
    if (count != 1) value = 0;  // PIL yields a tuple, which exif_transpose ignores
    else if (type == kTypeShort) value = read_u16(e + 8, big_endian);
    else if (type == kTypeLong) value = read_u32(e + 8, big_endian);
    orientation = (value >= 1 && value <= 8) ? static_cast<int>(value) : 0;
  }
  return orientation;
}

ImageU8 apply_orientation(const ImageU8& img, int orientation) {
  if (orientation < 2 || orientation > 8) return img;
  const int w = img.width, h = img.height;
  const bool swaps = orientation >= 5;  // 5..8 transpose the axes
  ImageU8 out(swaps ? h : w, swaps ? w : h);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = 0, sy = 0;
      switch (orientation) {
        case 2: sx = w - 1 - x; sy = y; break;          // FLIP_LEFT_RIGHT
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;  // ROTATE_180
        case 4: sx = x; sy = h - 1 - y; break;          // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                  // TRANSPOSE
        case 6: sx = y; sy = h - 1 - x; break;          // ROTATE_270 (clockwise)
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;  // TRANSVERSE
        case 8: sx = w - 1 - y; sy = x; break;          // ROTATE_90 (counter-clockwise)
      }
      std::memcpy(out.at(x, y), img.at(sx, sy), 3);
    }
  }
  return out;
}

ImageU8 decode_image_memory(const uint8_t* data, size_t size, const std::string& name_for_errors,
                            const DecodeOptions& opts) {
  static const uint8_t kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size == 0) throw InputError(name_for_errors, "empty file, not a PNG or JPEG image");
  int orientation = 0;
  ImageU8 img;
  if (size >= 8 && std::memcmp(data, kPngMagic, 8) == 0) {
    img = decode_png(data, size, name_for_errors, opts, &orientation);
  } else if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    img = decode_jpeg(data, size, name_for_errors, opts, &orientation);
  } else {
    throw InputError(name_for_errors, "not a PNG or JPEG image");
  }
  if (opts.apply_exif_orientation && orientation > 1) img = apply_orientation(img, orientation);
  return img;
}

ImageU8 decode_image_file(const std::string& path, const DecodeOptions& opts) {
  const std::string bytes = io::read_file(path);  // InputError naming the file if missing/unreadable
  return decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path, opts);
}

}  // namespace p2dpo::image
