// Noise levels given on the command line (mid_t, t'), checked as the float32
// a model's config.pbtxt holds them in. Header-only, for the tools.
#ifndef TCM_TOOLS_TIME_FLAGS_H_
#define TCM_TOOLS_TIME_FLAGS_H_

#include <cmath>
#include <string>

#include "absl/flags/marshalling.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tcm {

// Whether `t` is inside (0, t_max) once written as a float32 (79.9999999 is
// written as 80, 1e-50 as 0).
inline bool InsideTimeRange(double t, float t_max) {
  const float written = static_cast<float>(t);
  return written > 0 && written < t_max;
}

// `t` as text that reads back exactly, and its float32 where rounding changes
// it: "79.9999999 (80 as a float32)".
inline std::string AsWritten(double t) {
  const float written = static_cast<float>(t);
  if (double(written) == t || std::isnan(t)) return absl::UnparseFlag(t);
  return absl::StrCat(absl::UnparseFlag(t), " (", absl::UnparseFlag(written), " as a float32)");
}

// OK when `t` is inside (0, t_max) as a float32; else one line:
// "SUBJECT must be in (0, t_max = T), got X" (SUBJECT names the flag).
inline absl::Status CheckTimeFlag(absl::string_view subject, double t, float t_max) {
  if (InsideTimeRange(t, t_max)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(subject, " must be in (0, t_max = ", t_max, "), got ", AsWritten(t)));
}

}  // namespace tcm

#endif  // TCM_TOOLS_TIME_FLAGS_H_
