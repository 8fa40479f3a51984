// Reads files that other people may place, refusing what is not a regular
// file. Header-only.
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
#include <memory>
#include <sstream>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace tcm {

// A regular file (symbolic links followed) open for reading. A FIFO, device
// or directory is refused (InvalidArgument naming the path) instead of
// blocking the reader or reading without end: for files that other people
// may place, such as a model repository's. The type is checked before the
// file is opened (opening some devices acts on them) and again, with the
// size, on the opened file, so that a file swapped in between cannot slip
// past. NotFound only for a missing file.
class RegularFile {
 public:
  static absl::StatusOr<std::unique_ptr<RegularFile>> Open(const std::string& path) {
    const auto cannot_open = [&path](int error) {
      return absl::Status(error == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kFailedPrecondition,
                          absl::StrCat(path, ": cannot open file: ", std::strerror(error)));
    };
    struct stat before {};
    if (::stat(path.c_str(), &before) != 0) return cannot_open(errno);
    if (!S_ISREG(before.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return cannot_open(errno);
    std::unique_ptr<RegularFile> file(new RegularFile(path, fd));
    struct stat st {};
    if (::fstat(fd, &st) != 0) return absl::DataLossError(absl::StrCat(path, ": ", std::strerror(errno)));
    if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
    file->size_ = static_cast<uint64_t>(st.st_size);
    return file;
  }
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  ~RegularFile() { ::close(fd_); }

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }  // when it was opened

  // Up to `n` bytes from `offset` into `out`, resized to what was read: fewer
  // only where the file ends first (it shrank since it was opened).
  absl::Status ReadUpTo(uint64_t offset, uint64_t n, std::string* out) const {
    out->resize(n);
    uint64_t done = 0;
    while (done < n) {
      const ssize_t got = ::pread(fd_, out->data() + done, n - done, static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::DataLossError(absl::StrCat(path_, ": read error: ", std::strerror(errno)));
      if (got == 0) break;
      done += static_cast<uint64_t>(got);
    }
    out->resize(done);
    return absl::OkStatus();
  }

 private:
  RegularFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
  uint64_t size_ = 0;
};

// The bytes of `path`, which must be a regular file (RegularFile::Open) of at
// most `max_bytes`; a file that shrinks while it is read gives what is there.
inline absl::StatusOr<std::string> ReadRegularFile(const std::string& path,
                                                   uint64_t max_bytes = std::numeric_limits<uint64_t>::max()) {
  auto file = RegularFile::Open(path);
  if (!file.ok()) return file.status();
  const uint64_t size = (*file)->size();
  if (size > max_bytes)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes, more than the ", max_bytes, " such a file may have"));
  std::string contents;
  if (absl::Status read = (*file)->ReadUpTo(0, size, &contents); !read.ok()) return read;
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
