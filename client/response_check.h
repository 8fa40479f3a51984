// The clients trust nothing a server sends: a GenerateResponse is checked
// against the request it answers before any image is tiled, counted or
// written. Torch-free.
#ifndef TCM_CLIENT_RESPONSE_CHECK_H_
#define TCM_CLIENT_RESPONSE_CHECK_H_

#include "absl/status/status.h"
#include "tcm/v1/tcm_service.pb.h"

namespace tcm {

// Largest image side and channel count a client accepts from a server.
inline constexpr uint32_t kMaxImageSide = 16384;
inline constexpr uint32_t kMaxImageChannels = 4;

// OK when `response` holds what `request` asked for: num_images images (0 =
// 1), indices 0..n-1 once each, in the format asked; each image's width,
// height (1..kMaxImageSide) and channels (1..kMaxImageChannels) agree with
// its data (RAW: exactly width x height x channels bytes; PNG: the signature
// and an IHDR chunk of that width and height); and a model name that is safe
// in a file name. Else DATA_LOSS naming the first problem.
absl::Status CheckGenerateResponse(const v1::GenerateRequest& request, const v1::GenerateResponse& response);

// Also OK only when every image has the first one's width, height and
// channels (they are tiled into one grid).
absl::Status CheckSameImageSize(const v1::GenerateResponse& response);

}  // namespace tcm

#endif  // TCM_CLIENT_RESPONSE_CHECK_H_
