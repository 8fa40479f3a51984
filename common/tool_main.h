// The outer wrapper of a command-line tool's main(): runs its body and turns
// the outcome into the exit code.
//   - a body returning absl::Status exits 0 when it is OK;
//   - a body returning absl::StatusOr<int> exits with that int;
//   - a failed status or an exception (a LibTorch error included) prints one
//     line, "TOOL: message", to stderr and exits 2.
#ifndef TCM_COMMON_TOOL_MAIN_H_
#define TCM_COMMON_TOOL_MAIN_H_

#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/utf8.h"

namespace tcm {

inline constexpr int kToolFailureExitCode = 2;

// Prints "TOOL: message" on one line to stderr.
inline void PrintToolError(absl::string_view tool, absl::string_view message) {
  std::fprintf(stderr, "%.*s: %.*s\n", static_cast<int>(tool.size()), tool.data(), static_cast<int>(message.size()),
               message.data());
}

// What absl::ParseCommandLine leaves over, the program's name first: a tool
// that takes only flags refuses anything more, naming the first word left.
inline absl::Status NoPositionalArguments(const std::vector<char*>& leftovers) {
  if (leftovers.size() <= 1) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("unexpected argument '", PrintableLine(leftovers[1]), "' (flags are --name=value)"));
}

template <typename Body>
int RunToolMain(absl::string_view tool, Body&& body) {
  using Result = std::invoke_result_t<Body>;
  static_assert(std::is_same_v<Result, absl::Status> || std::is_same_v<Result, absl::StatusOr<int>>,
                "a tool's body returns absl::Status or absl::StatusOr<int>");
  try {
    Result result = std::forward<Body>(body)();
    if constexpr (std::is_same_v<Result, absl::Status>) {
      if (result.ok()) return 0;
      PrintToolError(tool, result.message());
    } else {
      if (result.ok()) return *result;
      PrintToolError(tool, result.status().message());
    }
  } catch (const std::exception& e) {
    // Its first line: LibTorch's messages go on with a stack trace.
    const absl::string_view what = e.what();
    PrintToolError(tool, what.substr(0, what.find('\n')));
  }
  return kToolFailureExitCode;
}

}  // namespace tcm

#endif  // TCM_COMMON_TOOL_MAIN_H_
