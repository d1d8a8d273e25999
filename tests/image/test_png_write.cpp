#include <string>

#include <gtest/gtest.h>

#include "image/decode.h"
#include "image/png_write.h"
#include "io/errors.h"
#include "test_paths.h"

namespace p2dpo::image {
namespace {

ImageU8 gradient(int w, int h) {
  ImageU8 img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img.at(x, y)[0] = static_cast<uint8_t>(x * 255 / (w - 1));
      img.at(x, y)[1] = static_cast<uint8_t>(y * 255 / (h - 1));
      img.at(x, y)[2] = static_cast<uint8_t>((x + y) * 2);
    }
  return img;
}

TEST(PngWrite, RoundTripsExactly) {
  const std::string path = test::scratch_dir("image_pngw") + "/sub/out.png";
  const ImageU8 img = gradient(37, 23);
  write_png_atomic(path, img);
  const ImageU8 back = decode_image_file(path);
  EXPECT_EQ(back.width, 37);
  EXPECT_EQ(back.height, 23);
  EXPECT_EQ(back.rgb, img.rgb);
}

TEST(JpegWrite, RoundTripsClosely) {
  const std::string path = test::scratch_dir("image_jpgw") + "/out.jpg";
  const ImageU8 img = gradient(64, 48);
  write_jpeg_atomic(path, img, 95);
  const ImageU8 back = decode_image_file(path);
  ASSERT_EQ(back.rgb.size(), img.rgb.size());
  int worst = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i) worst = std::max(worst, std::abs(int(back.rgb[i]) - int(img.rgb[i])));
  EXPECT_LE(worst, 6);  // lossy, but the same smooth picture
}

TEST(PngWrite, RejectsEmptyImagesAndBadQuality) {
  const std::string dir = test::scratch_dir("image_w_bad");
  EXPECT_THROW(write_png_atomic(dir + "/e.png", ImageU8()), InputError);
  EXPECT_THROW(write_jpeg_atomic(dir + "/q.jpg", gradient(4, 4), 0), InputError);
}

}  // namespace
}  // namespace p2dpo::image
