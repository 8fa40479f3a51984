// Reads a whole file into a string. Header-only.
#ifndef TCM_COMMON_READ_FILE_H_
#define TCM_COMMON_READ_FILE_H_

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace tcm {

// The bytes of `path`, which must be a regular file (symbolic links followed)
// of at most `max_bytes`. A FIFO, device or directory is refused (InvalidArgument
// naming the path) instead of blocking the reader or reading without end: for
// files that other people may place, such as a model repository's. The type
// is checked before the file is opened (opening some devices acts on them)
// and again, with the size, on the opened file, so that a file swapped in
// between cannot slip past. NotFound only for a missing file.
inline absl::StatusOr<std::string> ReadRegularFile(const std::string& path,
                                                   uint64_t max_bytes = std::numeric_limits<uint64_t>::max()) {
  const auto cannot_open = [&path](int error) {
    return absl::Status(error == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition,
                        absl::StrCat(path, ": cannot open file: ", std::strerror(error)));
  };
  struct stat before {};
  if (::stat(path.c_str(), &before) != 0) return cannot_open(errno);
  if (!S_ISREG(before.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return cannot_open(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return absl::DataLossError(absl::StrCat(path, ": ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes, more than the ", max_bytes, " such a file may have"));
  std::string contents(size, '\0');
  uint64_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, contents.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::DataLossError(absl::StrCat(path, ": read error: ", std::strerror(errno)));
    if (n == 0) break;  // shrank while read: what is there
    done += static_cast<uint64_t>(n);
  }
  contents.resize(done);
  return contents;
}

// The bytes of the file a command-line flag names, which must be a regular
// file and not empty: the flag was given, so a file that holds nothing (or a
// directory, which reads as nothing) is an error, never taken as the flag left
// out. Errors keep ReadRegularFile's code and start "--flag: ".
inline absl::StatusOr<std::string> ReadFlagFile(const std::string& path, absl::string_view flag) {
  auto text = ReadRegularFile(path);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat("--", flag, ": ", text.status().message()));
  if (text->empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, ": empty file"));
  return text;
}

}  // namespace tcm

#endif  // TCM_COMMON_READ_FILE_H_
