// PNG encoding of 8-bit images. Torch-free.
#ifndef TCM_COMMON_PNG_ENCODER_H_
#define TCM_COMMON_PNG_ENCODER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tcm {

// Encodes `pixels` (row-major height x width x channels, channels 1 = grey,
// 3 = RGB, 4 = RGBA) as a PNG file. `fast` trades size for speed (zlib level 1).
absl::StatusOr<std::string> EncodePng(const uint8_t* pixels, int width, int height, int channels, bool fast = true);

}  // namespace tcm

#endif  // TCM_COMMON_PNG_ENCODER_H_
