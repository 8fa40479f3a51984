#include "client/response_check.h"

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

absl::Status Bad(const std::string& what) {
  return absl::DataLossError(absl::StrCat("the server's response is malformed: ", what));
}

uint32_t BigEndian32(const std::string& data, size_t at) {
  return (uint32_t(uint8_t(data[at])) << 24) | (uint32_t(uint8_t(data[at + 1])) << 16) |
         (uint32_t(uint8_t(data[at + 2])) << 8) | uint32_t(uint8_t(data[at + 3]));
}

// A PNG starts with its 8-byte signature, then the IHDR chunk: length 13,
// "IHDR", width, height (big-endian).
absl::Status CheckPngHeader(const v1::Image& image, const std::string& where) {
  static const std::string kSignature("\x89PNG\r\n\x1a\n", 8);
  const std::string& data = image.data();
  if (data.size() < 24 || data.compare(0, 8, kSignature) != 0 || BigEndian32(data, 8) != 13 ||
      data.compare(12, 4, "IHDR") != 0)
    return Bad(absl::StrCat(where, ": data is not a PNG image"));
  const uint32_t width = BigEndian32(data, 16), height = BigEndian32(data, 20);
  if (width != image.width() || height != image.height())
    return Bad(absl::StrCat(where, ": the PNG is ", width, "x", height, " but the response says ", image.width(), "x",
                            image.height()));
  return absl::OkStatus();
}

bool SafeInFileName(const std::string& name) {
  if (name.empty() || name.size() > 200 || name == "." || name == "..") return false;
  for (char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '_' || ch == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckGenerateResponse(const v1::GenerateRequest& request, const v1::GenerateResponse& response) {
  if (!SafeInFileName(response.model()))
    return Bad(absl::StrCat("model name '", response.model().substr(0, 64),
                            "' is not a plain name (letters, digits, '-', '_', '.')"));
  const uint32_t expected = request.num_images() == 0 ? 1 : request.num_images();
  if (static_cast<uint32_t>(response.images_size()) != expected)
    return Bad(absl::StrCat(response.images_size(), " images for ", expected, " asked"));
  std::vector<bool> seen(expected, false);
  for (int i = 0; i < response.images_size(); ++i) {
    const v1::Image& image = response.images(i);
    const std::string where = absl::StrCat("image ", i);
    if (image.index() >= expected || seen[image.index()])
      return Bad(absl::StrCat(where, ": index ", image.index(), " is out of range or repeated"));
    seen[image.index()] = true;
    if (image.width() < 1 || image.width() > kMaxImageSide || image.height() < 1 || image.height() > kMaxImageSide)
      return Bad(absl::StrCat(where, ": size ", image.width(), "x", image.height(), " is outside 1..", kMaxImageSide));
    if (image.channels() < 1 || image.channels() > kMaxImageChannels)
      return Bad(absl::StrCat(where, ": ", image.channels(), " channels is outside 1..", kMaxImageChannels));
    if (image.format() != request.format())
      return Bad(absl::StrCat(where, ": format ", v1::ImageFormat_Name(image.format()), " but ",
                              v1::ImageFormat_Name(request.format()), " was asked"));
    if (image.format() == v1::IMAGE_FORMAT_RAW) {
      const uint64_t bytes = uint64_t{image.width()} * image.height() * image.channels();
      if (image.data().size() != bytes)
        return Bad(absl::StrCat(where, ": ", image.data().size(), " bytes of data, but ", image.width(), "x",
                                image.height(), "x", image.channels(), " needs ", bytes));
    } else if (absl::Status png = CheckPngHeader(image, where); !png.ok()) {
      return png;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSameImageSize(const v1::GenerateResponse& response) {
  if (response.images_size() == 0) return Bad("no images");
  const v1::Image& first = response.images(0);
  for (int i = 1; i < response.images_size(); ++i) {
    const v1::Image& image = response.images(i);
    if (image.width() != first.width() || image.height() != first.height() || image.channels() != first.channels())
      return Bad(absl::StrCat("image ", i, " is ", image.width(), "x", image.height(), "x", image.channels(),
                              ", image 0 is ", first.width(), "x", first.height(), "x", first.channels()));
  }
  return absl::OkStatus();
}

}  // namespace tcm
