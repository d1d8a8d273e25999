#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "image/decode.h"
#include "image_test_util.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "test_paths.h"

namespace p2dpo::image {
namespace {

using test::data_path;
using test::sha256_hex;

nlohmann::json decode_refs() { return io::read_json_file(data_path("image/decode-refs.json")); }

// Every small PNG/JPEG made by make_image_refs.py must decode to PIL's convert("RGB") bytes.
TEST(Decode, MatchesPilConvertRgbForEveryColourType) {
  const auto refs = decode_refs();
  ASSERT_GE(refs.size(), 25u);
  for (const auto& [file, ref] : refs.items()) {
    SCOPED_TRACE(file + " (PIL mode " + ref["pil_mode"].get<std::string>() + ")");
    const ImageU8 img = decode_image_file(data_path("image/decode/" + file));
    EXPECT_EQ(img.width, ref["width"].get<int>());
    EXPECT_EQ(img.height, ref["height"].get<int>());
    EXPECT_EQ(sha256_hex(img), ref["sha256"].get<std::string>());
  }
}

TEST(Decode, CoversTheConversionsWeClaim) {
  const auto refs = decode_refs();
  for (const char* f : {"grey1.png", "grey16.png", "greyalpha8.png", "greyalpha16.png", "rgba8.png", "rgba16.png",
                        "rgb16.png", "palette8.png", "palette4_short_plte.png", "cmyk.jpg", "grey.jpg",
                        "rgb444_progressive.jpg"})
    EXPECT_TRUE(refs.contains(f)) << f;
  EXPECT_EQ(refs["cmyk.jpg"]["pil_mode"], "CMYK");
  EXPECT_EQ(refs["grey16.png"]["pil_mode"], "I");
}

TEST(Decode, ExifOrientationAppliedOnlyWhenAsked) {
  const auto refs = decode_refs();
  int checked = 0;
  for (const auto& [file, ref] : refs.items()) {
    if (!ref.contains("exif_transposed")) continue;
    SCOPED_TRACE(file);
    const std::string path = data_path("image/decode/" + file);
    const ImageU8 plain = decode_image_file(path);  // default: no rotation, like PIL Image.open
    EXPECT_EQ(sha256_hex(plain), ref["sha256"].get<std::string>());
    DecodeOptions opts;
    opts.apply_exif_orientation = true;
    const ImageU8 turned = decode_image_file(path, opts);
    EXPECT_EQ(turned.width, ref["exif_transposed"]["width"].get<int>());
    EXPECT_EQ(turned.height, ref["exif_transposed"]["height"].get<int>());
    EXPECT_EQ(sha256_hex(turned), ref["exif_transposed"]["sha256"].get<std::string>());
    ++checked;
  }
  EXPECT_EQ(checked, 10);  // orientations 1..8, big-endian TIFF, PNG eXIf
}

TEST(Decode, ExifParserIsBoundsCheckedAndTakesTheLastDuplicate) {
  // "II", 42, IFD at 8, 2 entries: orientation 3 then orientation 6.
  std::vector<uint8_t> tiff = {'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0,
                               0x12, 0x01, 3, 0, 1, 0, 0, 0, 3, 0, 0, 0,
                               0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0};
  EXPECT_EQ(exif_orientation_from_tiff(tiff.data(), tiff.size()), 6);
  // Cut inside the second entry: the first one still counts (PIL keeps what it read).
  EXPECT_EQ(exif_orientation_from_tiff(tiff.data(), tiff.size() - 3), 3);
  for (size_t n = 0; n < 10; ++n) EXPECT_EQ(exif_orientation_from_tiff(tiff.data(), n), 0) << n;
  auto bad = tiff;
  bad[4] = 0xF0;  // IFD offset past the end
  EXPECT_EQ(exif_orientation_from_tiff(bad.data(), bad.size()), 0);
  bad = tiff;
  bad[0] = bad[1] = 'X';
  EXPECT_EQ(exif_orientation_from_tiff(bad.data(), bad.size()), 0);
  auto out_of_range = tiff;
  out_of_range[30] = 9;
  EXPECT_EQ(exif_orientation_from_tiff(out_of_range.data(), out_of_range.size()), 0);
}

TEST(Decode, OrientationTransformsMatchPilDefinitions) {
  ImageU8 img(3, 2);  // pixel value = 10*y + x in every channel
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) img.at(x, y)[0] = img.at(x, y)[1] = img.at(x, y)[2] = uint8_t(10 * y + x);
  const ImageU8 r90 = apply_orientation(img, 8);  // PIL ROTATE_90 is counter-clockwise
  ASSERT_EQ(r90.width, 2);
  ASSERT_EQ(r90.height, 3);
  EXPECT_EQ(r90.at(0, 0)[0], 2);   // the top-right corner moves to the top-left
  EXPECT_EQ(r90.at(1, 2)[0], 10);  // the bottom-left corner moves to the bottom-right
  const ImageU8 r270 = apply_orientation(img, 6);
  EXPECT_EQ(r270.at(0, 0)[0], 10);
  EXPECT_EQ(apply_orientation(img, 1).rgb, img.rgb);
  EXPECT_EQ(apply_orientation(img, 42).rgb, img.rgb);
}

TEST(Decode, PhotoJpegMatchesPillowDecodedPixels) {
  const auto ref = io::read_json_file(data_path("image/preprocess-336-a.json"))["images"]["coffee_q90"];
  const ImageU8 img = decode_image_file(data_path("image/coffee_q90.jpg"));
  EXPECT_EQ(img.height, ref["decoded_u8_shape"][0].get<int>());
  EXPECT_EQ(img.width, ref["decoded_u8_shape"][1].get<int>());
  EXPECT_EQ(sha256_hex(img), ref["decoded_u8_sha256"].get<std::string>());
}

// ---- bad input: always InputError naming the file ----

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void expect_input_error(const std::string& bytes, const std::string& name, const std::string& fragment) {
  try {
    decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
    ADD_FAILURE() << name << ": expected InputError containing '" << fragment << "'";
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), name);
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, MissingFile) {
  const std::string path = test::scratch_dir("image_missing") + "/nope.png";
  try {
    decode_image_file(path);
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, ZeroSizeFile) {
  const std::string path = test::scratch_dir("image_empty") + "/empty.jpg";
  std::ofstream(path).close();
  try {
    decode_image_file(path);
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), path);
    EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, TruncatedPng) {
  const std::string png = read_bytes(data_path("image/chelsea.png"));
  for (size_t keep : {size_t{8}, size_t{20}, size_t{40}, png.size() / 2, png.size() - 20})
    expect_input_error(png.substr(0, keep), "cut" + std::to_string(keep) + ".png", "PNG");
}

TEST(DecodeErrors, TruncatedJpeg) {
  const std::string jpg = read_bytes(data_path("image/coffee_q90.jpg"));
  for (size_t keep : {size_t{3}, size_t{100}, size_t{700}, jpg.size() / 2, jpg.size() - 300})
    expect_input_error(jpg.substr(0, keep), "cut" + std::to_string(keep) + ".jpg", "JPEG");
  const std::string progressive = read_bytes(data_path("image/decode/rgb444_progressive.jpg"));
  expect_input_error(progressive.substr(0, progressive.size() - 2), "prog.jpg", "truncated");
}

TEST(DecodeErrors, RandomBytesAndOtherFormats) {
  std::string noise(4096, '\0');
  uint32_t state = 12345;
  for (char& c : noise) {
    state = state * 1664525u + 1013904223u;
    c = static_cast<char>(state >> 24);
  }
  expect_input_error(noise, "noise.bin", "not a PNG or JPEG image");
  expect_input_error("GIF89a\x01\x00\x01\x00", "anim.gif", "not a PNG or JPEG image");
  // Valid magic followed by garbage.
  expect_input_error(std::string("\x89PNG\r\n\x1a\n", 8) + noise, "garbage.png", "PNG");
  expect_input_error(std::string("\xFF\xD8\xFF", 3) + noise, "garbage.jpg", "JPEG");
}

TEST(DecodeErrors, CorruptPngChecksum) {
  std::string png = read_bytes(data_path("image/decode/rgb8.png"));
  png[29] ^= 0x55;  // inside the IHDR CRC
  expect_input_error(png, "crc.png", "PNG");
}

// PNG header claiming huge dimensions (CRC fixed up so only our limit can reject it).
std::string png_with_size(uint32_t w, uint32_t h) {
  std::string png = read_bytes(data_path("image/decode/rgb8.png"));
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) png[at + i] = static_cast<char>(v >> (24 - 8 * i));
  };
  put32(16, w);
  put32(20, h);
  // CRC-32 over "IHDR" + 13 bytes of data (bytes 12..28), stored at 29.
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 12; i < 29; ++i) {
    crc ^= static_cast<uint8_t>(png[i]);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  put32(29, ~crc);
  return png;
}

TEST(DecodeErrors, AbsurdAndZeroDimensions) {
  expect_input_error(png_with_size(70000, 10), "wide.png", "too large");
  expect_input_error(png_with_size(40000, 40000), "many.png", "too large");
  expect_input_error(png_with_size(0, 5), "zero.png", "PNG");
  // The caller can tighten the pixel limit (the fuzzer does).
  const std::string ok = png_with_size(7, 5);
  EXPECT_NO_THROW(decode_image_memory(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "ok.png"));
  DecodeOptions tight;
  tight.max_pixels = 34;
  EXPECT_THROW(decode_image_memory(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), "ok.png", tight),
               InputError);
}

}  // namespace
}  // namespace p2dpo::image
