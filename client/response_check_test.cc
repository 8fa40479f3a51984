#include "client/response_check.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/png_encoder.h"

namespace tcm {
namespace {

v1::GenerateRequest Request(unsigned num_images, v1::ImageFormat format) {
  v1::GenerateRequest request;
  request.set_num_images(num_images);
  request.set_format(format);
  return request;
}

// A well-formed response of `n` w x h x c images in `format`.
v1::GenerateResponse Response(unsigned n, uint32_t w, uint32_t h, uint32_t c, v1::ImageFormat format) {
  v1::GenerateResponse response;
  response.set_model("fashion-mnist-tcm");
  const std::vector<uint8_t> pixels(size_t{w} * h * c, 7);
  for (unsigned i = 0; i < n; ++i) {
    v1::Image* image = response.add_images();
    image->set_index(n - 1 - i);  // any order
    image->set_width(w);
    image->set_height(h);
    image->set_channels(c);
    image->set_format(format);
    if (format == v1::IMAGE_FORMAT_RAW) {
      image->set_data(std::string(pixels.begin(), pixels.end()));
    } else {
      image->set_data(*EncodePng(pixels.data(), static_cast<int>(w), static_cast<int>(h), static_cast<int>(c)));
    }
  }
  return response;
}

void ExpectMalformed(const v1::GenerateRequest& request, const v1::GenerateResponse& response,
                     const std::string& fragment) {
  const absl::Status status = CheckGenerateResponse(request, response);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_NE(status.message().find(fragment), absl::string_view::npos) << status;
}

TEST(ResponseCheckTest, WellFormedResponsesPass) {
  for (auto format : {v1::IMAGE_FORMAT_RAW, v1::IMAGE_FORMAT_PNG}) {
    EXPECT_TRUE(CheckGenerateResponse(Request(3, format), Response(3, 32, 16, 3, format)).ok());
    EXPECT_TRUE(CheckGenerateResponse(Request(0, format), Response(1, 8, 8, 1, format)).ok()) << "0 asks for 1";
  }
  EXPECT_TRUE(CheckSameImageSize(Response(4, 8, 8, 1, v1::IMAGE_FORMAT_RAW)).ok());
}

TEST(ResponseCheckTest, RawDataMustMatchTheStatedSize) {
  const auto request = Request(2, v1::IMAGE_FORMAT_RAW);
  auto response = Response(2, 32, 32, 3, v1::IMAGE_FORMAT_RAW);
  response.mutable_images(1)->set_width(64);  // says 64 wide, holds 32
  ExpectMalformed(request, response, "image 1: 3072 bytes of data, but 64x32x3 needs 6144");
  response = Response(2, 32, 32, 3, v1::IMAGE_FORMAT_RAW);
  response.mutable_images(0)->mutable_data()->pop_back();
  ExpectMalformed(request, response, "image 0: 3071 bytes of data");
  response = Response(2, 32, 32, 3, v1::IMAGE_FORMAT_RAW);
  response.mutable_images(0)->set_channels(1u << 31);
  ExpectMalformed(request, response, "channels is outside 1..4");
  response.mutable_images(0)->set_channels(3);
  response.mutable_images(0)->set_height(0);
  ExpectMalformed(request, response, "size 32x0 is outside 1..16384");
}

TEST(ResponseCheckTest, PngMustBeAPngOfTheStatedSize) {
  const auto request = Request(1, v1::IMAGE_FORMAT_PNG);
  auto response = Response(1, 32, 32, 1, v1::IMAGE_FORMAT_PNG);
  response.mutable_images(0)->set_height(31);
  ExpectMalformed(request, response, "image 0: the PNG is 32x32 but the response says 32x31");
  response = Response(1, 32, 32, 1, v1::IMAGE_FORMAT_PNG);
  response.mutable_images(0)->set_data("not a png at all, but long enough");
  ExpectMalformed(request, response, "data is not a PNG image");
  response.mutable_images(0)->set_data("");
  ExpectMalformed(request, response, "data is not a PNG image");
  ExpectMalformed(request, Response(1, 8, 8, 1, v1::IMAGE_FORMAT_RAW), "format IMAGE_FORMAT_RAW but IMAGE_FORMAT_PNG");
}

TEST(ResponseCheckTest, ImageCountAndIndicesMustMatchTheRequest) {
  const auto request = Request(3, v1::IMAGE_FORMAT_RAW);
  ExpectMalformed(request, Response(2, 4, 4, 1, v1::IMAGE_FORMAT_RAW), "2 images for 3 asked");
  ExpectMalformed(request, v1::GenerateResponse(), "model name ''");
  auto response = Response(3, 4, 4, 1, v1::IMAGE_FORMAT_RAW);
  response.mutable_images(2)->set_index(2);  // image 0 holds index 2 already
  ExpectMalformed(request, response, "image 2: index 2 is out of range or repeated");
  response.mutable_images(2)->set_index(3);
  ExpectMalformed(request, response, "index 3 is out of range or repeated");
}

TEST(ResponseCheckTest, ModelNameMustBeSafeInAFileName) {
  const auto request = Request(1, v1::IMAGE_FORMAT_RAW);
  for (const char* name : {"../../etc/cron.d/x", "a/b", "..", "name with space"}) {
    auto response = Response(1, 4, 4, 1, v1::IMAGE_FORMAT_RAW);
    response.set_model(name);
    ExpectMalformed(request, response, "is not a plain name");
  }
}

TEST(ResponseCheckTest, GridNeedsOneImageSize) {
  auto response = Response(3, 8, 8, 1, v1::IMAGE_FORMAT_RAW);
  response.mutable_images(2)->set_width(4);
  const absl::Status status = CheckSameImageSize(response);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("image 2 is 4x8x1, image 0 is 8x8x1"), absl::string_view::npos) << status;
  EXPECT_FALSE(CheckSameImageSize(v1::GenerateResponse()).ok());
}

}  // namespace
}  // namespace tcm
