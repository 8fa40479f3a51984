// --help for the project's command-line tools. Header-only.
#ifndef TCM_COMMON_FLAGS_USAGE_H_
#define TCM_COMMON_FLAGS_USAGE_H_

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace tcm {

// The longest time a tool takes in a flag of seconds (a timeout, a run's
// length): a day. Longer values are typing mistakes, and some would overflow
// the integer clocks they are converted to.
inline constexpr double kMaxFlagSeconds = 86400;

// Sets the usage text and makes --help list the program's own flags (by
// default Abseil lists only flags defined in a file named like the binary,
// which never matches "tcm-server" against "server/main.cc").
inline void SetUsage(absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view path) { return !absl::StrContains(path, "absl/"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace tcm

#endif  // TCM_COMMON_FLAGS_USAGE_H_
