#include "common/png_encoder.h"

#include <gtest/gtest.h>
#include <png.h>

#include <vector>

namespace tcm {
namespace {

// Decodes with libpng's simplified API and returns the pixels.
std::vector<uint8_t> Decode(const std::string& png_file, int* width, int* height, int* channels) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_memory(&image, png_file.data(), png_file.size()));
  *width = image.width;
  *height = image.height;
  *channels = PNG_IMAGE_SAMPLE_CHANNELS(image.format);
  std::vector<uint8_t> pixels(PNG_IMAGE_SIZE(image));
  EXPECT_TRUE(png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr));
  return pixels;
}

TEST(PngEncoderTest, GreyAndRgbRoundTrip) {
  for (int channels : {1, 3}) {
    std::vector<uint8_t> pixels(5 * 4 * channels);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 37);
    auto png = EncodePng(pixels.data(), 5, 4, channels);
    ASSERT_TRUE(png.ok()) << png.status();
    EXPECT_EQ(png->substr(1, 3), "PNG");
    int w, h, c;
    EXPECT_EQ(Decode(*png, &w, &h, &c), pixels);
    EXPECT_EQ(w, 5);
    EXPECT_EQ(h, 4);
    EXPECT_EQ(c, channels);
  }
}

TEST(PngEncoderTest, RejectsBadShapes) {
  uint8_t pixel = 0;
  EXPECT_FALSE(EncodePng(&pixel, 1, 1, 2).ok());
  EXPECT_FALSE(EncodePng(&pixel, 0, 1, 1).ok());
}

}  // namespace
}  // namespace tcm
