#include "common/thread_priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tcm {
namespace {

// On Linux PRIO_PROCESS with a thread id addresses that one thread.
id_t ThisThreadId() { return static_cast<id_t>(syscall(SYS_gettid)); }

}  // namespace

int ThisThreadNice() {
  errno = 0;
  return getpriority(PRIO_PROCESS, ThisThreadId());
}

absl::Status LowerThisThreadPriority(int increment) {
  if (increment < 0 || increment > 19)
    return absl::InvalidArgumentError(absl::StrCat("nice increment must be in 0..19, got ", increment));
  if (increment == 0) return absl::OkStatus();
  const int target = ThisThreadNice() + increment;
  if (setpriority(PRIO_PROCESS, ThisThreadId(), target) != 0)
    return absl::InternalError(absl::StrCat("setpriority(", target, "): ", std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace tcm
