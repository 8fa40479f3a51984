#include "common/png_encoder.h"

#include <png.h>
#include <zlib.h>

#include <csetjmp>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

void AppendToString(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), length);
}

void Flush(png_structp) {}

}  // namespace

absl::StatusOr<std::string> EncodePng(const uint8_t* pixels, int width, int height, int channels, bool fast) {
  int color_type;
  switch (channels) {
    case 1:
      color_type = PNG_COLOR_TYPE_GRAY;
      break;
    case 3:
      color_type = PNG_COLOR_TYPE_RGB;
      break;
    case 4:
      color_type = PNG_COLOR_TYPE_RGBA;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("PNG: unsupported channel count ", channels));
  }
  if (width <= 0 || height <= 0) return absl::InvalidArgumentError("PNG: empty image");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (png == nullptr) return absl::ResourceExhaustedError("PNG: out of memory");
  png_infop info = png_create_info_struct(png);
  std::string out;
  std::vector<png_bytep> rows(height);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError("PNG: encoding failed");
  }
  png_set_write_fn(png, &out, AppendToString, Flush);
  png_set_IHDR(png, info, width, height, 8, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (fast) {
    png_set_compression_level(png, Z_BEST_SPEED);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
  }
  for (int y = 0; y < height; ++y) rows[y] = const_cast<png_bytep>(pixels + static_cast<size_t>(y) * width * channels);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace tcm
