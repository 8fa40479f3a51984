// Writes a whole file so that readers see the old file or the new one, never
// a part. Header-only.
#ifndef TCM_COMMON_WRITE_FILE_H_
#define TCM_COMMON_WRITE_FILE_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tcm {

// Writes `data` to a new temporary file beside `path` (`path`.XXXXXX, its own
// for this call, so that writers of the same path never share one), then
// renames it over `path` (mode 0644). Every write and the close are checked
// (a full disk, a file size limit), and on any failure the temporary file is
// removed, `path` is left as it was, and the error (DataLoss, naming the path
// and the system's reason) is returned.
inline absl::Status WriteFileAtomically(const std::string& path, std::string_view data) {
  std::string tmp = path + ".XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return absl::DataLossError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  const auto failed = [&](const char* what, int error) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": ", what, ": ", std::strerror(error)));
  };
  if (::fchmod(fd, 0644) != 0) {
    const int error = errno;
    ::close(fd);
    return failed("cannot set its mode", error);
  }
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : ENOSPC;
      ::close(fd);
      return failed("write failed", error);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return failed("write failed", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return failed("cannot rename into place", errno);
  return absl::OkStatus();
}

}  // namespace tcm

#endif  // TCM_COMMON_WRITE_FILE_H_
