// Reads a whole file into a string. Header-only.
#ifndef TCM_COMMON_READ_FILE_H_
#define TCM_COMMON_READ_FILE_H_

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace tcm {

// The bytes of `path`; NotFound naming the path if it cannot be opened.
inline absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return std::move(contents).str();
}

// ReadFile for the file a command-line flag names; errors start "--flag: ".
inline absl::StatusOr<std::string> ReadFlagFile(const std::string& path, absl::string_view flag) {
  auto text = ReadFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("--", flag, ": ", text.status().message()));
  return text;
}

}  // namespace tcm

#endif  // TCM_COMMON_READ_FILE_H_
