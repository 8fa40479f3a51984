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
#include <filesystem>
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

// Why WriteFileAtomically could not write `path` later, or "" when it could:
// it needs a directory that exists and takes new files, and `path` must name
// a regular file or nothing yet. Only looks, leaving the file as it is: for
// tools that check an output path before a long run and write at its end.
inline std::string WritableFileProblem(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file(path);
  if (!file.has_filename()) return "it names a directory";
  std::error_code error;
  const fs::file_status status = fs::status(file, error);
  if (status.type() == fs::file_type::none) return error.message();
  if (fs::is_directory(status)) return "it is a directory";
  if (fs::exists(status) && !fs::is_regular_file(status)) return "it is not a regular file";
  const fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  if (!fs::exists(dir, error)) return absl::StrCat("its directory ", dir.string(), " does not exist");
  if (!fs::is_directory(dir, error)) return absl::StrCat(dir.string(), " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return absl::StrCat("its directory ", dir.string(), " does not take new files (", std::strerror(errno), ")");
  return "";
}

}  // namespace tcm

#endif  // TCM_COMMON_WRITE_FILE_H_
