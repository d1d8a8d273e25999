#include <cmath>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "image/clip_processor.h"
#include "image/decode.h"
#include "image/resize.h"
#include "image_test_util.h"
#include "io/errors.h"
#include "io/json_io.h"
#include "test_paths.h"

namespace p2dpo::image {
namespace {

using test::data_path;
using test::sha256_hex;

ClipProcessorConfig llava_336_config() {
  // preprocess-336-a's preprocessor_config.json holds llava-hf/llava-1.5-7b-hf's values; write it
  // out so the loader is exercised on the real key layout.
  const std::string path = test::scratch_dir("image_cfg336") + "/preprocessor_config.json";
  std::ofstream(path) << R"({"crop_size": {"height": 336, "width": 336}, "do_center_crop": true,
    "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "LlavaProcessor",
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}})";
  return load_clip_processor_config(path);
}

// Real photos against HF transformers 4.45.1 + Pillow 9.4 (fixture preprocess-336-a).
TEST(ClipProcessor, Preprocess336MatchesHfOnPhotos) {
  const auto refs = io::read_json_file(data_path("image/preprocess-336-a.json"))["images"];
  ASSERT_EQ(refs.size(), 4u);
  const ClipProcessorConfig cfg = llava_336_config();
  for (const auto& [name, ref] : refs.items()) {
    SCOPED_TRACE(name);
    const ImageU8 decoded = decode_image_file(data_path("image/" + ref["file"].get<std::string>()));
    ASSERT_EQ(decoded.width, ref["size_wh"][0].get<int>());
    ASSERT_EQ(decoded.height, ref["size_wh"][1].get<int>());
    for (const char* variant : {"hf", "pad"}) {
      SCOPED_TRACE(variant);
      const auto& v = ref[variant];
      ClipProcessorConfig c = cfg;
      c.pad_to_square = std::string(variant) == "pad";
      const ImageU8 input = c.pad_to_square ? expand_to_square(decoded, mean_background(c)) : decoded;
      // The uint8 resize before the crop.
      const auto hw = clip_resize_output_hw(input.height, input.width, c);
      const ImageU8 resized = resize_bicubic_pil(input, hw[1], hw[0]);
      EXPECT_EQ(resized.height, v["resized_u8_shape"][0].get<int>());
      EXPECT_EQ(resized.width, v["resized_u8_shape"][1].get<int>());
      EXPECT_EQ(sha256_hex(resized), v["resized_u8_sha256"].get<std::string>());
      // The full pipeline: pixel_values bit-equal (hash of the float32 bytes) and every sample.
      const ProcessedImage out = preprocess_clip(decoded, c);
      ASSERT_EQ(out.height, 336);
      ASSERT_EQ(out.width, 336);
      ASSERT_EQ(out.chw.size(), size_t{3 * 336 * 336});
      EXPECT_EQ(test::sha256_hex(reinterpret_cast<const uint8_t*>(out.chw.data()), out.chw.size() * 4),
                v["pixel_values_sha256"].get<std::string>());
      int samples = 0;
      for (const auto& [index, bits] : v["pixel_value_samples"].items()) {
        const float expected = test::float_from_hex_bits(bits.get<std::string>());
        const float got = out.chw.at(std::stoul(index));
        EXPECT_LE(std::fabs(got - expected), 1e-6f) << "index " << index;
        ++samples;
      }
      EXPECT_EQ(samples, 300);
    }
  }
}

TEST(ClipProcessor, CropAndPadGeometryOfThePhotoTable) {
  const auto refs = io::read_json_file(data_path("image/preprocess-336-a.json"))["images"];
  const ClipProcessorConfig cfg = llava_336_config();
  for (const auto& [name, ref] : refs.items()) {
    SCOPED_TRACE(name);
    const int w = ref["size_wh"][0], h = ref["size_wh"][1];
    const auto hw = clip_resize_output_hw(h, w, cfg);
    EXPECT_EQ(hw[0], ref["hf"]["resized_hw"][0].get<int>());
    EXPECT_EQ(hw[1], ref["hf"]["resized_hw"][1].get<int>());
    const auto tl = center_crop_top_left(hw[0], hw[1], 336, 336);
    EXPECT_EQ(tl[0], ref["hf"]["crop_top_left"][0].get<int>());
    EXPECT_EQ(tl[1], ref["hf"]["crop_top_left"][1].get<int>());
    EXPECT_EQ(std::max(w, h), ref["pad"]["square_side"].get<int>());
    EXPECT_EQ((std::max(w, h) - w) / 2, ref["pad"]["paste_offset_xy"][0].get<int>());
    EXPECT_EQ((std::max(w, h) - h) / 2, ref["pad"]["paste_offset_xy"][1].get<int>());
  }
  // README table, spelled out: chelsea 451x300 -> 336x505, crop 0,84; pad square 451 at 0,75.
  EXPECT_EQ(clip_resize_output_hw(300, 451, cfg), (std::array<int, 2>{336, 505}));
  EXPECT_EQ(center_crop_top_left(336, 505, 336, 336), (std::array<int, 2>{0, 84}));
  EXPECT_EQ(clip_resize_output_hw(400, 600, cfg), (std::array<int, 2>{336, 504}));
  EXPECT_EQ(center_crop_top_left(336, 504, 336, 336), (std::array<int, 2>{0, 84}));
}

TEST(ClipProcessor, SpecSizeTable) {  // spec §C.1 worked sizes (W x H -> resized H x W, crop top/left)
  const ClipProcessorConfig cfg = llava_336_config();
  struct Case { int w, h, rh, rw, top, left; };
  for (const Case& k : {Case{640, 480, 336, 448, 0, 56}, Case{500, 375, 336, 448, 0, 56},
                        Case{427, 640, 503, 336, 83, 0}, Case{640, 427, 336, 503, 0, 83},
                        Case{333, 500, 504, 336, 84, 0}}) {
    SCOPED_TRACE(std::to_string(k.w) + "x" + std::to_string(k.h));
    EXPECT_EQ(clip_resize_output_hw(k.h, k.w, cfg), (std::array<int, 2>{k.rh, k.rw}));
    EXPECT_EQ(center_crop_top_left(k.rh, k.rw, 336, 336), (std::array<int, 2>{k.top, k.left}));
  }
}

TEST(ClipProcessor, MeanBackgroundAndExpandToSquare) {
  const ClipProcessorConfig cfg = llava_336_config();
  EXPECT_EQ(mean_background(cfg), (std::array<uint8_t, 3>{122, 116, 104}));
  ImageU8 wide(5, 2);
  for (auto& v : wide.rgb) v = 7;
  const ImageU8 sq = expand_to_square(wide, {1, 2, 3});
  ASSERT_EQ(sq.width, 5);
  ASSERT_EQ(sq.height, 5);
  EXPECT_EQ(sq.at(0, 0)[1], 2);   // row 0 is background
  EXPECT_EQ(sq.at(0, 1)[0], 7);   // pasted at y = (5 - 2) / 2 = 1
  EXPECT_EQ(sq.at(4, 2)[2], 7);
  EXPECT_EQ(sq.at(4, 3)[2], 3);
  ImageU8 tall(2, 5);
  const ImageU8 sq2 = expand_to_square(tall, {9, 9, 9});
  EXPECT_EQ(sq2.at(0, 0)[0], 9);  // x offset (5 - 2) / 2 = 1
  EXPECT_EQ(sq2.at(1, 0)[0], 0);
  EXPECT_EQ(sq2.at(3, 4)[0], 9);
}

// The tiny llava/clip fixtures (56 px): every pixel_value within 1e-6 of HF's.
TEST(ClipProcessor, TinyFixturesMatchHfPixelValues) {
  const auto refs = io::read_json_file(data_path("image/tiny-pixel-values.json"))["images"];
  ASSERT_EQ(refs.size(), 6u);
  for (const auto& [image, b64] : refs.items()) {
    SCOPED_TRACE(image);
    const std::string fixture = image.substr(0, image.find('/'));
    const ClipProcessorConfig cfg = load_clip_processor_config(data_path(fixture + "/preprocessor_config.json"));
    EXPECT_EQ(cfg.shortest_edge, 56);
    const ProcessedImage out = preprocess_clip(decode_image_file(data_path(image)), cfg);
    const std::vector<float> expected = test::floats_from_le_bytes(test::base64_decode(b64.get<std::string>()));
    ASSERT_EQ(expected.size(), size_t{3 * 56 * 56});
    ASSERT_EQ(out.chw.size(), expected.size());
    float max_diff = 0;
    for (size_t i = 0; i < expected.size(); ++i) max_diff = std::max(max_diff, std::fabs(out.chw[i] - expected[i]));
    EXPECT_LE(max_diff, 1e-6f);
  }
}

TEST(ClipProcessor, NormalizeFormulaIsNumpyFloat32) {
  ClipProcessorConfig cfg = llava_336_config();
  ImageU8 px(1, 1);
  px.rgb = {0, 128, 255};
  float out[3];
  normalize_to_chw(px, cfg, out);
  for (int c = 0; c < 3; ++c) {
    const float x = static_cast<float>(static_cast<double>(px.rgb[c]) * 0.00392156862745098);
    EXPECT_EQ(out[c], (x - static_cast<float>(cfg.image_mean[c])) / static_cast<float>(cfg.image_std[c]));
  }
  cfg.do_normalize = false;
  normalize_to_chw(px, cfg, out);
  EXPECT_EQ(out[2], 1.0f);
  cfg.do_rescale = false;
  normalize_to_chw(px, cfg, out);
  EXPECT_EQ(out[1], 128.0f);
}

TEST(ClipProcessor, CropSmallerImageIsZeroPaddedLikeHf) {
  ClipProcessorConfig cfg = llava_336_config();
  cfg.do_resize = false;
  cfg.do_rescale = cfg.do_normalize = false;
  cfg.crop_height = 4;
  cfg.crop_width = 2;
  ImageU8 img(3, 1);  // 3 wide, 1 high -> crop 2 wide (left 0), 4 high (image at row ceil(3/2) = 2)
  img.rgb = {10, 10, 10, 20, 20, 20, 30, 30, 30};
  const ProcessedImage out = preprocess_clip(img, cfg);
  ASSERT_EQ(out.view.width, 2);
  ASSERT_EQ(out.view.height, 4);
  EXPECT_EQ(out.view.at(0, 2)[0], 10);
  EXPECT_EQ(out.view.at(1, 2)[0], 20);
  for (int y : {0, 1, 3}) EXPECT_EQ(out.view.at(0, y)[0], 0);
}

std::string write_config(const std::string& body) {
  const std::string path = test::scratch_dir("image_cfg_bad") + "/preprocessor_config.json";
  std::ofstream(path) << body;
  return path;
}

TEST(ClipProcessorConfigLoad, AcceptsHfSizeSpellings) {
  auto cfg = load_clip_processor_config(write_config(R"({"size": 224, "crop_size": 224})"));
  EXPECT_EQ(cfg.shortest_edge, 224);
  EXPECT_EQ(cfg.crop_height, 224);
  EXPECT_EQ(cfg.crop_width, 224);
  cfg = load_clip_processor_config(write_config(R"({"size": {"height": 30, "width": 40}, "crop_size": {"height": 20, "width": 10}})"));
  EXPECT_EQ(cfg.shortest_edge, 0);
  EXPECT_EQ(cfg.resize_height, 30);
  EXPECT_EQ(cfg.resize_width, 40);
  EXPECT_EQ(clip_resize_output_hw(100, 7, cfg), (std::array<int, 2>{30, 40}));
  EXPECT_EQ(cfg.crop_height, 20);
  EXPECT_EQ(cfg.crop_width, 10);
  cfg = load_clip_processor_config(write_config("{}"));  // HF defaults
  EXPECT_EQ(cfg.shortest_edge, 224);
  EXPECT_EQ(cfg.resample, 3);
  EXPECT_DOUBLE_EQ(cfg.rescale_factor, 1.0 / 255.0);
}

TEST(ClipProcessorConfigLoad, MalformedConfigsNameFileAndField) {
  struct Case { const char* body; const char* fragment; };
  for (const Case& k : {Case{R"({"resample": 2})", "resample"}, Case{R"({"size": {"longest_edge": 3}})", "size"},
                        Case{R"({"crop_size": -4})", "crop_size"}, Case{R"({"image_mean": [0.5, 0.5]})", "image_mean"},
                        Case{R"({"image_std": [1, 0, 1]})", "image_std"}, Case{R"({"do_resize": "yes"})", "do_resize"},
                        Case{R"({"rescale_factor": "x"})", "rescale_factor"}, Case{"[1, 2]", "object"},
                        Case{R"({"size": )", ""}}) {
    const std::string path = write_config(k.body);
    try {
      load_clip_processor_config(path);
      ADD_FAILURE() << k.body;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(k.fragment), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(load_clip_processor_config(test::scratch_dir("image_cfg_missing") + "/none.json"), InputError);
}

}  // namespace
}  // namespace p2dpo::image

namespace p2dpo::image {
namespace {

TEST(ClipProcessor, ExtremeAspectRatioAndEmptyInputAreInputErrors) {
  ClipProcessorConfig cfg;  // shortest_edge 224
  ImageU8 sliver(60000, 1);
  try {
    preprocess_clip(sliver, cfg, "sliver.png");
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(e.where(), "sliver.png");
  }
  EXPECT_THROW(preprocess_clip(ImageU8(), cfg, "empty.png"), InputError);
}

}  // namespace
}  // namespace p2dpo::image
